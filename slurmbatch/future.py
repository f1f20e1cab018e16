"""JobFuture: the awaitable handle of one submitted job."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import attrs

from .slurm.states import JobState

if TYPE_CHECKING:
    from .session import SlurmSession

T = TypeVar("T")

_PENDING = object()


@attrs.frozen
class RemoteValue:
    """A job's return value still on the cluster: its file there (`path`) and size in bytes.

    A future whose value was passed on to other jobs holds this in place of the value until it is
    awaited, so that a value that only travels from job to job never comes to the client.
    """

    path: str
    size: int


class JobFuture(Generic[T]):
    """A submitted job: its Slurm id, its last known state, and eventually its result.

    `await future` (or `await future.result()`) waits for the job and returns the function's return
    value (fetched from the cluster, inside the session's block, if the future was passed to other
    jobs and its value stayed there), or raises what the function raised (the original exception type, with the remote traceback
    attached), or a [`JobFailed`][slurmbatch.JobFailed] subclass when the job ended without a result.

    Cancelling the task that awaits a future cancels only the waiting: the job runs on, and the future
    can be awaited again. Use `cancel` to cancel the job itself.

    A future never waits for a session that has ended: when the session stops following a job whose
    outcome it does not know (it was detached, the login node stayed unreachable past
    `reconnect_deadline`, or the job could not be cancelled within `cancel_timeout`), the future
    raises an error that says so and names `reattach(<session id>)`, which collects the job later.
    """

    __slots__ = (
        "_attempts",
        "_done",
        "_exception",
        "_session",
        "_source_file",
        "_state",
        "_value",
        "_value_file",
        "_waiters",
        "job_id",
        "token",
    )

    def __init__(
        self, session: SlurmSession, *, job_id: str, token: str, source_file: str | None = None
    ) -> None:
        self._session = session
        # Where the submitted function was defined, to restore source lines in remote tracebacks.
        self._source_file = source_file
        self._done = False
        # Created when someone first waits: most futures of a big map are never awaited while pending,
        # and an event per future would triple their memory.
        self._waiters: anyio.Event | None = None
        self._value: Any = _PENDING
        # Where the job's large return value is on the cluster (it stays until the job is released).
        self._value_file: str | None = None
        self._exception: BaseException | None = None
        self._state = JobState.PENDING
        #: Slurm's job id: `"123"`, or `"123_4"` for a task of an array job.
        self.job_id = job_id
        #: The client-made token that names the job's remote files and its Slurm job name.
        self.token = token
        self._attempts = [job_id]

    def __repr__(self) -> str:
        return f"<JobFuture job_id={self.job_id} state={self._state.name}>"

    @property
    def state(self) -> JobState:
        """The job's last known Slurm state (updated by the session's single status query)."""
        return self._state

    @property
    def attempts(self) -> tuple[str, ...]:
        """The Slurm job ids tried for this call, oldest first; the last is `job_id`.

        A job is submitted again (a new id, the same future) when it ended with an outcome its
        `JobSpec.retry_on` names, at most `JobSpec.retries` times. A job Slurm requeued keeps its id.
        """
        return tuple(self._attempts)

    def done(self) -> bool:
        """Return True once the outcome is known (a value, an exception, or a terminal state)."""
        return self._done

    async def result(self) -> T:
        """Wait for the job and return its value, or raise its exception or typed end state."""
        if not self._done:
            if self._waiters is None:
                self._waiters = anyio.Event()
            await self._waiters.wait()
        if self._exception is not None:
            raise self._exception
        if isinstance(self._value, RemoteValue):
            # Passed on to other jobs, it was left on the cluster: fetched now that it is wanted here.
            self._value = await self._session._fetch_value(self, self._value)
        value: T = self._value
        return value

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    def exception(self) -> BaseException | None:
        """The exception the job ended with, or None; raises RuntimeError if the job is not done yet."""
        if not self.done():
            raise RuntimeError(f"Job {self.job_id} is not done yet; await it first.")
        return self._exception

    async def cancel(self) -> bool:
        """Cancel the job with `scancel`; return False if it had already finished.

        The future then raises [`JobCancelled`][slurmbatch.JobCancelled] (unless the job finished first).
        """
        if self.done():
            return False
        await self._session.cancel_jobs([self])
        return True

    async def stdout(self) -> str:
        """The job's standard output so far (read from the remote work directory)."""
        return await self._session._read_output(self, "stdout")

    async def stderr(self) -> str:
        """The job's standard error so far (read from the remote work directory)."""
        return await self._session._read_output(self, "stderr")

    # -- called by the session ----------------------------------------------------------------
    def _set_state(self, state: JobState) -> None:
        if not self.done():
            self._state = state

    def _retried(self, job_id: str) -> None:
        """The call was submitted again, as job `job_id`."""
        self.job_id = job_id
        self._attempts.append(job_id)
        self._state = JobState.PENDING

    def _set_result(self, value: Any) -> None:
        if not self._done:
            self._value = value
            self._state = JobState.COMPLETED
            self._finish()

    def _set_exception(self, exc: BaseException, state: JobState | None = None) -> None:
        if not self._done:
            self._exception = exc
            if state is not None:
                self._state = state
            self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._waiters is not None:
            self._waiters.set()
