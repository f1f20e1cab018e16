"""Slurm job states, and the error a job that ended without a result is reported with."""

from __future__ import annotations

import enum
import signal as _signal

import attrs

from slurmbatch._errors import (
    JobCancelled,
    JobFailed,
    JobNodeFailure,
    JobOutOfMemory,
    JobPreempted,
    JobTimeout,
)

__all__ = ["MAY_CLEAR", "NEVER_STARTS", "JobState", "JobStatus", "failure_for"]


class JobState(enum.Enum):
    """A Slurm job state, as `squeue` and `sacct` name it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    CONFIGURING = "CONFIGURING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    RESIZING = "RESIZING"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    UPDATE_DB = "UPDATE_DB"
    RECONFIG_FAIL = "RECONFIG_FAIL"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    UNKNOWN = "UNKNOWN"
    """A state this version of slurmbatch does not know; never terminal."""

    @property
    def is_terminal(self) -> bool:
        """True when the job has ended and will not run again by itself."""
        return self in _TERMINAL

    @classmethod
    def from_slurm(cls, text: str) -> JobState:
        """Parse a state as Slurm prints it: `COMPLETED`, `CANCELLED by 1000`, `CANCELLED+`, `CD`.

        Anything unrecognised gives `UNKNOWN`.
        """
        words = text.strip().upper().split()
        word = words[0].rstrip("+") if words else ""
        word = _COMPACT.get(word, word)
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN


_TERMINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.OUT_OF_MEMORY,
        JobState.CANCELLED,
        JobState.PREEMPTED,
        JobState.NODE_FAIL,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.REVOKED,
        JobState.SPECIAL_EXIT,
    }
)

# squeue's StateCompact / %t codes.
_COMPACT = {
    "PD": "PENDING",
    "R": "RUNNING",
    "S": "SUSPENDED",
    "CG": "COMPLETING",
    "CF": "CONFIGURING",
    "RQ": "REQUEUED",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RS": "RESIZING",
    "RD": "RESV_DEL_HOLD",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "LF": "LAUNCH_FAILED",
    "UD": "UPDATE_DB",
    "RC": "RECONFIG_FAIL",
    "CD": "COMPLETED",
    "F": "FAILED",
    "TO": "TIMEOUT",
    "OOM": "OUT_OF_MEMORY",
    "CA": "CANCELLED",
    "PR": "PREEMPTED",
    "NF": "NODE_FAIL",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RV": "REVOKED",
    "SE": "SPECIAL_EXIT",
}


_LOWER_THE_LIMIT = "It asks for more than its QOS or association allows per job: ask for less."
NEVER_STARTS: dict[str, str] = {
    "PartitionTimeLimit": "Its time limit (--time) is over its partition's: lower it, or choose another partition.",
    "PartitionNodeLimit": "It asks for more nodes than its partition allows: ask for fewer, or choose another.",
    "BadConstraints": "No node satisfies its constraints (--constraint, --mem, --cpus-per-task...): relax them.",
    "InvalidAccount": "Its account is not valid for you: check --account (sacctmgr show assoc user=$USER).",
    "InvalidQOS": "Its QOS is not valid for you: check --qos.",
    "DependencyNeverSatisfied": "A job it depends on ended in a way that cannot satisfy the dependency.",
    "QOSMaxWallDurationPerJobLimit": _LOWER_THE_LIMIT,
    "AssocMaxWallDurationPerJobLimit": _LOWER_THE_LIMIT,
    "QOSMaxNodePerJobLimit": _LOWER_THE_LIMIT,
    "QOSMaxCpuPerJobLimit": _LOWER_THE_LIMIT,
    "QOSMaxMemoryPerJob": _LOWER_THE_LIMIT,
    "AssocMaxNodesPerJobLimit": _LOWER_THE_LIMIT,
    "AssocMaxCpuPerJobLimit": _LOWER_THE_LIMIT,
}
"""squeue reasons of pending jobs that waiting never clears (only an administrator's change would), each
with what the user can change instead."""

MAY_CLEAR = frozenset({"PartitionNodeLimit", "BadConstraints"})
"""Reasons of `NEVER_STARTS` that can also be temporary: Slurm gives them while the nodes that would
satisfy the job are down or drained, and they clear once the nodes are back. A job is given up for them
only once they persist."""


@attrs.frozen
class JobStatus:
    """What Slurm says about one job (or one array task).

    Attributes:
        state: the parsed state.
        exit_code: the batch script's exit code, or `None` if Slurm did not report one.
        signal: the signal that ended the batch script (0 if none), or `None` if not reported.
        raw_state: the state exactly as Slurm printed it, e.g. `"CANCELLED by 1000"`.
        reason: why a pending job waits (squeue's reason), e.g. `"Resources"`; `""` if not reported.
    """

    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    raw_state: str = ""
    reason: str = ""

    @property
    def never_starts(self) -> bool:
        """True for a pending job whose reason waiting does not clear: it asks for more than its
        partition, account or QOS allows, or depends on a job that can no longer satisfy it."""
        return self.state is JobState.PENDING and self.reason in NEVER_STARTS

    @property
    def is_terminal(self) -> bool:
        """True when the job has ended and will not run again by itself."""
        return self.state.is_terminal


_FAILURE_TYPES: dict[JobState, type[JobFailed]] = {
    JobState.TIMEOUT: JobTimeout,
    JobState.OUT_OF_MEMORY: JobOutOfMemory,
    JobState.CANCELLED: JobCancelled,
    JobState.PREEMPTED: JobPreempted,
    JobState.NODE_FAIL: JobNodeFailure,
}

_WHAT_HAPPENED = {
    JobState.TIMEOUT: "reached its time limit and was stopped by Slurm",
    JobState.OUT_OF_MEMORY: "used more memory than it asked for and was killed by Slurm",
    JobState.CANCELLED: "was cancelled",
    JobState.PREEMPTED: "was preempted by a higher-priority job",
    JobState.NODE_FAIL: "was stopped because one of its nodes failed",
    JobState.BOOT_FAIL: "could not start because its nodes failed to boot",
    JobState.DEADLINE: "reached its deadline before it could finish",
    JobState.COMPLETED: "finished",
    JobState.FAILED: "failed",
}

_WHAT_TO_DO = {
    JobState.TIMEOUT: "Ask for more time (options={'time': ...}) or split the work into shorter jobs.",
    JobState.OUT_OF_MEMORY: "Ask for more memory (options={'mem': ...} or {'mem-per-cpu': ...}).",
    JobState.PREEMPTED: "Submit it again, or use a partition or QOS whose jobs are not preempted.",
    JobState.NODE_FAIL: "Submitting it again may succeed.",
    JobState.BOOT_FAIL: "Submitting it again may succeed; tell the cluster's administrators if it repeats.",
    JobState.COMPLETED: (
        "A setup, prerun or postrun line may have ended the script early, or the result file was "
        "removed; see the job's stderr."
    ),
}


def failure_for(status: JobStatus, *, job_id: str, stderr_tail: str = "") -> JobFailed:
    """Return the error for job *job_id*, which ended in *status* without writing a result.

    TIMEOUT gives [`JobTimeout`][slurmbatch.JobTimeout], OUT_OF_MEMORY [`JobOutOfMemory`][slurmbatch.JobOutOfMemory],
    CANCELLED [`JobCancelled`][slurmbatch.JobCancelled], PREEMPTED [`JobPreempted`][slurmbatch.JobPreempted], NODE_FAIL
    [`JobNodeFailure`][slurmbatch.JobNodeFailure], and every other state [`JobFailed`][slurmbatch.JobFailed]. The error
    is returned, not raised. *stderr_tail* is the end of the job's standard error, shown with the error.

    Clusters that enforce memory by sampling it (`JobAcctGatherParams=OverMemoryKill`, no cgroups) end
    such jobs FAILED or CANCELLED, and slurmstepd says why on the job's stderr: that too gives
    [`JobOutOfMemory`][slurmbatch.JobOutOfMemory].
    """
    if status.state in (JobState.FAILED, JobState.CANCELLED) and any(s in stderr_tail for s in _MEMORY_KILL):
        status = attrs.evolve(status, state=JobState.OUT_OF_MEMORY)
    what = _WHAT_HAPPENED.get(status.state, "ended")
    state = status.raw_state.strip() or status.state.value
    parts = [f"state {state}"]
    if status.exit_code is not None:
        parts.append(f"exit code {status.exit_code}")
    if status.signal:
        parts.append(f"signal {_signal_name(status.signal)}")
    message = f"Slurm job {job_id} {what} without writing a result ({', '.join(parts)})."
    advice = _WHAT_TO_DO.get(status.state)
    if advice:
        message = f"{message} {advice}"
    error_type = _FAILURE_TYPES.get(status.state, JobFailed)
    return error_type(
        message,
        job_id=job_id,
        state=status.state.value,
        exit_code=status.exit_code,
        signal=status.signal,
        stderr_tail=stderr_tail,
    )


# What slurmstepd writes to a job's stderr when it kills the job for its memory use.
_MEMORY_KILL = ("Exceeded job memory limit", "exceeded memory limit", "oom-kill event", "oom_kill event")


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({_signal.Signals(number).name})"
    except ValueError:
        return str(number)
