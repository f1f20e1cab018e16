"""The exceptions slurmbatch raises.

Every error names what went wrong and what to do about it. Errors about a job carry its id, so a
user can look it up with `sacct` or `scontrol`.
"""

from __future__ import annotations

__all__ = [
    "ConnectError",
    "DependencyFailed",
    "JobCancelled",
    "JobFailed",
    "JobNodeFailure",
    "JobOutOfMemory",
    "JobPreempted",
    "JobTimeout",
    "JournalError",
    "PayloadError",
    "RemoteEnvironmentError",
    "RemoteError",
    "SessionClosedError",
    "SlurmBatchError",
    "SubmissionError",
]


class SlurmBatchError(Exception):
    """Base class of every error slurmbatch raises on its own account."""


class ConnectError(SlurmBatchError):
    """The login node could not be reached or refused us.

    `host` is the host as given (or its ssh-config alias); `cause` the underlying error, if any.
    """

    def __init__(self, message: str, *, host: str = "", cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.cause = cause


class ConnectionLost(ConnectError):
    """The connection dropped while an operation ran: it may have run partly, fully, or not at all.

    The session retries what is safe to retry on a new connection; this reaches user code only from the
    transport layer (`SSHPool`) used directly.
    """


class IncompleteReply(ConnectionLost):
    """A remote script's reply ended before its end marker: it may have run partly, fully, or not at all.

    Raised when the shell that ran it died or its channel closed early; never taken for a script that
    printed nothing. The session treats it as a lost connection: what is safe to run again runs again,
    a submission is looked up first. `stdout` and `stderr` hold what did arrive.
    """

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "", host: str = "") -> None:
        super().__init__(message, host=host)
        self.stdout = stdout
        self.stderr = stderr


class SubmissionError(SlurmBatchError):
    """`sbatch` refused the job; the message carries sbatch's own words."""

    def __init__(self, message: str, *, sbatch_stderr: str = "") -> None:
        super().__init__(message)
        self.sbatch_stderr = sbatch_stderr


class PayloadError(SlurmBatchError, TypeError):
    """A function, its arguments or its result could not be pickled or unpickled."""


class DependencyFailed(SlurmBatchError):
    """A job this one took as an argument (a [`JobFuture`][slurmbatch.JobFuture] among its arguments) failed or was
    cancelled, so this one never ran: Slurm would never start it, and the session cancelled it.

    `upstream_job_id` is the failed job's id and `upstream_error` what it failed with.
    """

    def __init__(self, message: str, *, upstream_job_id: str, upstream_error: BaseException | None) -> None:
        super().__init__(message)
        self.upstream_job_id = upstream_job_id
        self.upstream_error = upstream_error


class SessionClosedError(SlurmBatchError, RuntimeError):
    """The session was used outside its `async with` block, or after it was closed."""


class JournalError(SlurmBatchError):
    """The local journal file (the session's `journal=`) cannot be created, opened or written."""


class RemoteEnvironmentError(SlurmBatchError):
    """The job side cannot run the payload: wrong Python minor version, cloudpickle missing or too old."""


class RemoteError(SlurmBatchError):
    """The function raised on the job side, and its exception type cannot be rebuilt here.

    `exc_type` is the remote exception's qualified type name and `remote_traceback` its formatted
    traceback.
    """

    def __init__(
        self, message: str, *, exc_type: str = "", remote_traceback: str = "", job_id: str = ""
    ) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback
        self.job_id = job_id

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n\nRemote traceback:\n{self.remote_traceback}" if self.remote_traceback else base


class JobFailed(SlurmBatchError):
    """The job ended without a result.

    `state` is Slurm's end state, `exit_code` the batch script's exit code (or `None`), and
    `stderr_tail` the last lines of the job's standard error.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        state: str = "",
        exit_code: int | None = None,
        signal: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.exit_code = exit_code
        self.signal = signal
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        base = super().__str__()
        if self.stderr_tail:
            return f"{base}\n\nLast lines of the job's stderr:\n{self.stderr_tail}"
        return base


class JobTimeout(JobFailed):
    """Slurm killed the job at its time limit (state TIMEOUT). Raise `--time` or split the work."""


class JobOutOfMemory(JobFailed):
    """Slurm killed the job for exceeding its memory (state OUT_OF_MEMORY). Raise `--mem`."""


class JobCancelled(JobFailed):
    """The job was cancelled (state CANCELLED), by us, by the user, or by an administrator."""


class JobPreempted(JobFailed):
    """The job was preempted by a higher-priority job (state PREEMPTED)."""


class JobNodeFailure(JobFailed):
    """A node of the job failed (state NODE_FAIL); the job may succeed if resubmitted."""
