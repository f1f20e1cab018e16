"""SyncJobFuture: a ``concurrent.futures.Future`` for one Slurm job of a :class:`SlurmExecutor`."""

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

T = TypeVar("T")


class SyncJobFuture(concurrent.futures.Future[T]):
    """The future of one job submitted through a :class:`~slurmbatch.SlurmExecutor`.

    It is a ``concurrent.futures.Future``: ``result(timeout)``, ``exception(timeout)``, ``done()``,
    ``add_done_callback`` and ``concurrent.futures.wait``/``as_completed`` behave as with the standard
    library's executors. ``result()`` returns the function's value, or raises what it raised on the
    cluster (its own type, with the remote traceback attached), or the job's end state
    (:class:`~slurmbatch.JobTimeout`, :class:`~slurmbatch.JobOutOfMemory`, ...), or the
    :class:`~slurmbatch.SubmissionError`/:class:`~slurmbatch.PayloadError` that kept it from being
    submitted.

    The future exists before sbatch has answered: :attr:`job_id` is ``None`` until the job is accepted
    (usually milliseconds later); :meth:`wait_accepted` waits for it.

    :meth:`cancel` differs from the standard library on purpose: a job that is already pending or
    running in Slurm is cancelled too (``scancel``), because remote work must be stoppable. It returns
    ``True`` unless the job had finished, and the future then raises
    ``concurrent.futures.CancelledError``.

    Done callbacks run in a thread of the executor (never on its event loop), or at once in the calling
    thread when the future is already done, as the standard library documents.
    """

    def __init__(self, loop: ExecutorLoop) -> None:
        super().__init__()
        self._loop = loop
        self._job: JobFuture[T] | None = None
        self._cancelling = threading.RLock()

    def __repr__(self) -> str:
        return f"<SyncJobFuture job_id={self.job_id} state={self.state.name} done={self.done()}>"

    @property
    def job_id(self) -> str | None:
        """Slurm's job id (``"123"``, or ``"123_4"`` for an array task); ``None`` until sbatch accepted it."""
        job = self._job
        return None if job is None else job.job_id

    @property
    def attempts(self) -> tuple[str, ...]:
        """The Slurm job ids tried for this call, oldest first; the last is :attr:`job_id`.

        Empty until sbatch accepted the job. A job is submitted again (a new id, the same future) when it
        ended with an outcome its ``JobSpec.retry_on`` names, at most ``JobSpec.retries`` times.
        """
        job = self._job
        return () if job is None else job.attempts

    @property
    def state(self) -> JobState:
        """The job's last known Slurm state (``PENDING`` until it is accepted, ``CANCELLED`` once cancelled)."""
        if self.cancelled():
            return JobState.CANCELLED
        job = self._job
        return JobState.PENDING if job is None else job.state

    def running(self) -> bool:
        """True while Slurm reports the job as running."""
        return not self.done() and self.state is JobState.RUNNING

    def wait_accepted(self, timeout: float | None = None) -> str:
        """Wait until sbatch accepted the job and return its id.

        Raises what kept it from being submitted (e.g. :class:`~slurmbatch.SubmissionError`),
        ``concurrent.futures.CancelledError`` if it was cancelled first, or ``TimeoutError``.
        """
        return self._loop.wait_accepted(self, timeout)

    def stdout(self, timeout: float | None = None) -> str:
        """The job's standard output so far (read from the remote work directory)."""
        return self._loop.read_output(self, "stdout", timeout)

    def stderr(self, timeout: float | None = None) -> str:
        """The job's standard error so far (read from the remote work directory)."""
        return self._loop.read_output(self, "stderr", timeout)

    def cancel(self) -> bool:
        """Cancel the job, pending or running (``scancel``); return False if it had already finished."""
        # Callbacks run inside super().cancel(): this lock is reentrant for one that cancels again.
        with self._cancelling:
            if self.cancelled():
                return True
            if not super().cancel():  # never marked RUNNING: False means finished
                return False
            # Waiters in concurrent.futures.wait()/as_completed() learn of a cancel from this call.
            self.set_running_or_notify_cancel()
        with self._loop.lock:  # against _accept: a job accepted from now on is cancelled by the loop
            job = self._job
        if job is not None:
            self._loop.cancel_soon(job)
        else:
            self._loop.notify_accepted()
        return True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        """Call ``fn(future)`` once the future is done (at once, in this thread, if it is already)."""
        super().add_done_callback(self._loop.callback_runner(fn))

    # -- called by the executor's loop ------------------------------------------------------
    def _accept(self, job: JobFuture[T]) -> bool:
        """Note the submitted job; False if the future was cancelled meanwhile (the job must go)."""
        with self._loop.lock:
            self._job = job
            return not self.cancelled()

    def _complete(self, value: Any = None, exc: BaseException | None = None) -> None:
        try:
            if exc is None:
                self.set_result(value)
            else:
                self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user meanwhile: the cancellation stands
