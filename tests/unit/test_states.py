"""Job states and the typed errors for jobs that ended without a result."""

from __future__ import annotations

import pytest

from slurmbatch._errors import (
    JobCancelled,
    JobFailed,
    JobNodeFailure,
    JobOutOfMemory,
    JobPreempted,
    JobTimeout,
)
from slurmbatch.slurm import JobState, JobStatus, failure_for

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED", "NODE_FAIL"}
TERMINAL |= {"BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("COMPLETED", JobState.COMPLETED),
        ("  RUNNING  ", JobState.RUNNING),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("CANCELLED by 1000", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("cancelled", JobState.CANCELLED),
        ("OOM", JobState.OUT_OF_MEMORY),
        ("PD", JobState.PENDING),
        ("CG", JobState.COMPLETING),
        ("TO", JobState.TIMEOUT),
        ("REQUEUE_HOLD", JobState.REQUEUE_HOLD),
        ("SOMETHING_NEW", JobState.UNKNOWN),
        ("", JobState.UNKNOWN),
    ],
)
def test_from_slurm(text: str, state: JobState) -> None:
    assert JobState.from_slurm(text) is state


def test_terminal_states() -> None:
    assert {state.value for state in JobState if state.is_terminal} == TERMINAL
    assert JobStatus(JobState.PENDING).is_terminal is False
    assert JobStatus(JobState.TIMEOUT).is_terminal is True


@pytest.mark.parametrize(
    ("state", "error_type", "hint"),
    [
        (JobState.TIMEOUT, JobTimeout, "time"),
        (JobState.OUT_OF_MEMORY, JobOutOfMemory, "mem"),
        (JobState.CANCELLED, JobCancelled, "cancelled"),
        (JobState.PREEMPTED, JobPreempted, "preempted"),
        (JobState.NODE_FAIL, JobNodeFailure, "node"),
        (JobState.FAILED, JobFailed, "failed"),
        (JobState.BOOT_FAIL, JobFailed, "boot"),
        (JobState.DEADLINE, JobFailed, "deadline"),
        (JobState.COMPLETED, JobFailed, "setup, prerun or postrun"),
    ],
)
def test_failure_for_maps_states_to_typed_errors(
    state: JobState, error_type: type[JobFailed], hint: str
) -> None:
    status = JobStatus(state, exit_code=1, signal=0, raw_state=state.value)
    error = failure_for(status, job_id="123_4", stderr_tail="Traceback: boom")
    assert type(error) is error_type
    assert (error.job_id, error.state, error.exit_code, error.signal) == ("123_4", state.value, 1, 0)
    assert error.stderr_tail == "Traceback: boom"
    text = str(error)
    assert "123_4" in text and state.value in text and "exit code 1" in text and "Traceback: boom" in text
    assert hint in text.lower()


def test_failure_message_names_the_signal_and_the_raw_state() -> None:
    error = failure_for(JobStatus(JobState.CANCELLED, 0, 9, "CANCELLED by 1000"), job_id="7")
    assert (
        str(error)
        == "Slurm job 7 was cancelled without writing a result (state CANCELLED by 1000, exit code 0, signal 9 (SIGKILL))."
    )
    assert error.state == "CANCELLED"


def test_failure_message_without_exit_code() -> None:
    error = failure_for(JobStatus(JobState.FAILED), job_id="8")
    assert str(error) == "Slurm job 8 failed without writing a result (state FAILED)."
    assert error.exit_code is None and error.signal is None


def test_unknown_signal_numbers_are_shown_as_numbers() -> None:
    error = failure_for(JobStatus(JobState.OUT_OF_MEMORY, 0, 125, "OUT_OF_MEMORY"), job_id="9")
    assert "signal 125)" in str(error)


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_a_job_killed_for_its_memory_without_cgroups_is_out_of_memory(state: JobState) -> None:
    # What slurmstepd writes when JobAcctGatherParams=OverMemoryKill kills a job (no cgroup OOM event).
    tail = (
        "slurmstepd-node1: error: StepId=3.batch exceeded memory limit (439123968 > 104857600), being killed\n"
        "slurmstepd-node1: error: Exceeded job memory limit"
    )
    error = failure_for(JobStatus(state, 0, 9, state.value), job_id="3", stderr_tail=tail)
    assert isinstance(error, JobOutOfMemory)
    assert "Ask for more memory" in str(error)
    plain = failure_for(JobStatus(state, 0, 9, state.value), job_id="3", stderr_tail="Traceback ...")
    assert not isinstance(plain, JobOutOfMemory)
