"""SyncJobFuture: a `concurrent.futures.Future` for one Slurm job of a [`SlurmExecutor`][slurmbatch.SlurmExecutor]."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .slurm.states import JobState

if TYPE_CHECKING:
    from ._executor_loop import ExecutorLoop
    from .future import JobFuture

__all__ = ["SyncJobFuture"]

# concurrent.futures' own state names.
_PENDING = "PENDING"
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")

T = TypeVar("T")


class SyncJobFuture(concurrent.futures.Future[T]):
    """The future of one job submitted through a [`SlurmExecutor`][slurmbatch.SlurmExecutor].

    It is a `concurrent.futures.Future`: `result(timeout)`, `exception(timeout)`, `done()`,
    `add_done_callback` and `concurrent.futures.wait`/`as_completed` behave as with the standard
    library's executors. `result()` returns the function's value, or raises what it raised on the
    cluster (its own type, with the remote traceback attached), or the job's end state
    ([`JobTimeout`][slurmbatch.JobTimeout], [`JobOutOfMemory`][slurmbatch.JobOutOfMemory], ...), or the
    [`SubmissionError`][slurmbatch.SubmissionError]/[`PayloadError`][slurmbatch.PayloadError] that kept it from being
    submitted.

    The future exists before sbatch has answered: `job_id` is `None` until the job is accepted
    (usually milliseconds later); `wait_accepted` waits for it.

    `cancel` differs from the standard library on purpose: a job that is already pending or
    running in Slurm is cancelled too (`scancel`), because remote work must be stoppable. It returns
    `True` unless the job had finished, and the future then raises
    `concurrent.futures.CancelledError`.

    Done callbacks run in a thread of the executor (never on its event loop), or at once in the calling
    thread when the future is already done, as the standard library documents.
    """

    def __init__(self, loop: ExecutorLoop) -> None:
        # The fields of concurrent.futures.Future.__init__ (the same from Python 3.10 to 3.13), but not
        # its Condition: that is made on first use (see _condition), because building it is most of
        # a future's cost, and a map makes thousands of futures before returning.
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[T]], object]] = []
        self._loop = loop
        self._job: JobFuture[T] | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """The future's Condition, as the standard library's methods and `wait()` use it."""
        condition: threading.Condition | None = self.__dict__.get("_lazy_condition")
        if condition is None:
            # setdefault is atomic: of two threads racing here, both get the same Condition.
            condition = self.__dict__.setdefault("_lazy_condition", threading.Condition())
        return condition

    def __repr__(self) -> str:
        return f"<SyncJobFuture job_id={self.job_id} state={self.state.name} done={self.done()}>"

    @property
    def job_id(self) -> str | None:
        """Slurm's job id (`"123"`, or `"123_4"` for an array task); `None` until sbatch accepted it."""
        job = self._job
        return None if job is None else job.job_id

    @property
    def attempts(self) -> tuple[str, ...]:
        """The Slurm job ids tried for this call, oldest first; the last is `job_id`.

        Empty until sbatch accepted the job. A job is submitted again (a new id, the same future) when it
        ended with an outcome its `JobSpec.retry_on` names, at most `JobSpec.retries` times.
        """
        job = self._job
        return () if job is None else job.attempts

    @property
    def state(self) -> JobState:
        """The job's last known Slurm state (`PENDING` until it is accepted, `CANCELLED` once cancelled)."""
        if self.cancelled():
            return JobState.CANCELLED
        job = self._job
        return JobState.PENDING if job is None else job.state

    def running(self) -> bool:
        """True while Slurm reports the job as running."""
        return not self.done() and self.state is JobState.RUNNING

    def wait_accepted(self, timeout: float | None = None) -> str:
        """Wait until sbatch accepted the job and return its id.

        Raises what kept it from being submitted (e.g. [`SubmissionError`][slurmbatch.SubmissionError]),
        `concurrent.futures.CancelledError` if it was cancelled first, or `TimeoutError`.
        """
        return self._loop.wait_accepted(self, timeout)

    def stdout(self, timeout: float | None = None) -> str:
        """The job's standard output so far (read from the remote work directory)."""
        return self._loop.read_output(self, "stdout", timeout)

    def stderr(self, timeout: float | None = None) -> str:
        """The job's standard error so far (read from the remote work directory)."""
        return self._loop.read_output(self, "stderr", timeout)

    def cancel(self) -> bool:
        """Cancel the job, pending or running (`scancel`); return False if it had already finished."""
        # Callbacks run inside super().cancel(): this lock is reentrant for one that cancels again.
        # Made on the first cancel (atomically: setdefault), as most futures are never cancelled.
        with self.__dict__.setdefault("_cancelling", threading.RLock()):
            if self.cancelled():
                return True
            if not super().cancel():  # never marked RUNNING: False means finished
                return False
            # Waiters in concurrent.futures.wait()/as_completed() learn of a cancel from this call.
            self.set_running_or_notify_cancel()
        with self._loop.lock:  # against the loop giving it its job: one known from now on is cancelled there
            job = self._job
        if job is not None:
            self._loop.cancel_soon(job)
        else:
            self._loop.notify_accepted()
        return True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        """Call `fn(future)` once the future is done (at once, in this thread, if it is already)."""
        super().add_done_callback(self._loop.callback_runner(fn))

    # -- called by the executor's loop ------------------------------------------------------
    def _cancel_seen(self) -> bool:
        """Whether `cancel` has marked the future, read without taking its Condition.

        A cancel that races with this read is still handled: cancel() marks the future before it
        looks for the job, and the loop gives the future its job before it reads this.
        """
        return self._state in _CANCELLED

    def _complete(self, value: Any = None, exc: BaseException | None = None) -> None:
        try:
            if exc is None:
                self.set_result(value)
            else:
                self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user meanwhile: the cancellation stands
