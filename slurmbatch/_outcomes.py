"""How a tracked job ended, in words: the errors of jobs that ended without a usable result. Pure."""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import JobFailed, JobOutOfMemory, RemoteEnvironmentError
from .future import JobFuture
from .payload import unpack_outcome
from .slurm.states import JobState, JobStatus, failure_for

__all__ = ["Ended", "Outcome", "ended_failure", "forgotten_status", "result_outcome", "stderr_tail"]

_STDERR_TAIL_LINES = 20


@attrs.define
class Ended:
    """A job the scheduler called ended while no result file of it was known."""

    status: JobStatus
    settle_at: float
    seen: int = 1  # status queries in a row that called it ended


@attrs.frozen
class Outcome:
    """What a result file holds: a value, or the error to resolve the job with."""

    value: Any = None
    error: Exception | None = None


def result_outcome(data: bytes, future: JobFuture[Any], *, files_lost: bool, workdir: str) -> Outcome:
    """Read a job's result file; ``files_lost``: the work directory was removed under the job."""
    try:
        return Outcome(unpack_outcome(data, job_id=future.job_id, source_file=future._source_file))
    except RemoteEnvironmentError as exc:
        if not files_lost:
            return Outcome(error=exc)
        # E.g. its arguments file was gone when it started.
        failure = files_lost_error(future, JobStatus(JobState.FAILED), str(exc), workdir)
        failure.__cause__ = exc
        return Outcome(error=failure)
    except Exception as exc:
        return Outcome(error=exc)


def ended_failure(
    future: JobFuture[Any], status: JobStatus, tail: str, *, files_lost: bool, workdir: str
) -> tuple[JobFailed, JobState]:
    """The error of job ``future``, which ended in ``status`` without a result, and its final state."""
    if files_lost:
        exc: JobFailed = files_lost_error(future, status, tail, workdir)
    elif status.state is JobState.COMPLETED or status.state is JobState.UNKNOWN:
        exc = ended_without_result(
            future,
            status,
            "writing a result: the job script failed before or after the function ran (see its stderr).",
            tail,
        )
    else:
        exc = failure_for(status, job_id=future.job_id, stderr_tail=tail)
    return exc, JobState.OUT_OF_MEMORY if isinstance(exc, JobOutOfMemory) else status.state


def files_lost_error(future: JobFuture[Any], status: JobStatus, detail: str, workdir: str) -> JobFailed:
    """The error of a job whose files went with the removed work directory ``workdir``."""
    return ended_without_result(
        future,
        status,
        f"a result: the remote work directory {workdir} was removed while the job was queued or running, "
        "and its files with it. The session has recreated the directory; submit the job again.",
        detail,
    )


def ended_without_result(future: JobFuture[Any], status: JobStatus, why: str, tail: str) -> JobFailed:
    """``JobFailed``: job ``future`` ended in ``status`` without ``why``."""
    return JobFailed(
        f"Job {future.job_id} ended ({status.raw_state or status.state.name}) without {why}",
        job_id=future.job_id,
        state=status.state.name,
        exit_code=status.exit_code,
        signal=status.signal,
        stderr_tail=tail,
    )


def stderr_tail(data: bytes) -> str:
    """The last lines of a job's stderr file."""
    return "\n".join(data.decode(errors="replace").splitlines()[-_STDERR_TAIL_LINES:])


def forgotten_status(future: JobFuture[Any]) -> JobStatus:
    """How a job ended that neither squeue nor sacct knows."""
    if "_" in future.job_id and future.state is JobState.PENDING:
        # Slurm keeps the pending tasks of an array in one record; scancel of one of them just drops
        # it from that record, and no job completion record is ever written for it.
        return JobStatus(JobState.CANCELLED, raw_state="CANCELLED (removed from its array while pending)")
    return JobStatus(JobState.UNKNOWN, raw_state="unknown to squeue and sacct")
