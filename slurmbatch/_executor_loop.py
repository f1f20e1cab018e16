"""The event loop thread of a SlurmExecutor: one SlurmSession, served to any number of threads.

The session lives on a private event loop in one background thread (an anyio blocking portal), entered
and left by a host task of its own. Threads hand work to it without waiting for each other or for the
loop: submits go into a :class:`~slurmbatch._executor_submits.SubmitQueue` and cancels into a
:class:`~slurmbatch._executor_cancels.CancelQueue`, each drained by one task on the loop. Finished jobs
complete their :class:`SyncJobFuture` from the loop, and done callbacks run in a callback thread of
their own, so a callback that blocks (``other.result()``) never stalls the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._completer import FutureCompleter
from ._errors import SessionClosedError
from ._executor_cancels import CancelQueue
from ._executor_submits import QueuedCall, SubmitQueue
from ._handoff import CallbackThread, call_logged
from ._sync_future import SyncJobFuture
from .future import JobFuture
from .session import SlurmSession
from .spec import JobSpec

__all__ = ["CloseMode", "ExecutorLoop"]

logger = logging.getLogger("slurmbatch")
T = TypeVar("T")

#: How the session closes: wait for its jobs, cancel them (one scancel), or leave them to Slurm and
#: the journal (at interpreter exit).
CloseMode = Literal["wait", "cancel", "detach"]

#: Seconds the interpreter's exit may spend closing sessions whose executors were never shut down.
EXIT_TIMEOUT = 20.0

_open_loops: weakref.WeakSet[ExecutorLoop] = weakref.WeakSet()


class ExecutorLoop:
    """One session on a private event loop thread, and the queues that feed it from other threads."""

    def __init__(self, host: str, session_options: Mapping[str, Any]) -> None:
        self.lock = threading.Lock()  # the queues, and a future's cancel against its acceptance
        self._submits = SubmitQueue(self.lock)
        self._cancels = CancelQueue(self.lock)
        self._state: Literal["open", "closing", "closed"] = "open"
        self._close_mode: CloseMode = "wait"
        self._completer = FutureCompleter()
        self._callbacks = CallbackThread("slurmbatch-executor-callbacks")
        self._portal_stopped = False
        self._portal_context = start_blocking_portal("asyncio", name="slurmbatch-executor")
        self._portal: BlockingPortal = self._portal_context.__enter__()
        # The portal's loop is always asyncio's: threads wake it with call_soon_threadsafe, which,
        # unlike a portal call, does not wait for the loop to get round to it.
        self._event_loop: asyncio.AbstractEventLoop = self._portal.call(asyncio.get_running_loop)
        self._loop_thread = self._portal.call(threading.get_ident)
        try:
            self._host, started = self._portal.start_task(
                self._run_session, host, dict(session_options), name="slurmbatch executor session"
            )
        except BaseException:
            self._portal_context.__exit__(None, None, None)
            raise
        #: The session's name in the journal.
        self.session_id: str = started
        _open_loops.add(self)

    # ------------------------------------------------------------------------------- from threads
    def submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: Mapping[str, Any], spec: JobSpec | None
    ) -> SyncJobFuture[T]:
        future: SyncJobFuture[T] = SyncJobFuture(self)
        with self.lock:
            self._require_open()
            wake = self._submits.put(QueuedCall(future, fn, args, kwargs, spec))
        if wake:
            self._wake(self._submits.wake)
        return future

    def map(
        self, fn: Callable[..., T], columns: Sequence[Iterable[Any]], spec: JobSpec | None
    ) -> list[SyncJobFuture[T]]:
        with self.lock:
            self._require_open()
        jobs = self._portal.call(self._map, fn, [list(column) for column in columns], spec)
        # Made once the jobs are submitted: alive during the submission, ten thousand futures made
        # each of the garbage collector's passes over its allocations slower.
        futures: list[SyncJobFuture[T]] = [SyncJobFuture(self) for _ in jobs]
        return self._portal.call(self._follow, futures, jobs)

    def reattach(self, session_id: str | None) -> list[SyncJobFuture[Any]]:
        with self.lock:
            self._require_open()
        jobs = self._portal.call(self._reattach, session_id)
        return self._portal.call(self._follow, [SyncJobFuture(self) for _ in jobs], jobs)

    def cancel_soon(self, job: JobFuture[Any]) -> None:
        """Cancel ``job`` with the next ``scancel`` (one for every cancel queued meanwhile)."""
        with self.lock:
            if self._state == "closed":
                return
            wake = self._cancels.put(job)
        if wake:
            self._wake(self._cancels.wake)

    def wait_accepted(self, future: SyncJobFuture[Any], timeout: float | None) -> str:
        return self._submits.wait_accepted(future, timeout)

    def notify_accepted(self) -> None:
        """Wake the threads in :meth:`wait_accepted` (a future was cancelled before its job was known)."""
        self._submits.notify_accepted()

    def read_output(self, future: SyncJobFuture[Any], stream: str, timeout: float | None) -> str:
        self.wait_accepted(future, timeout)
        job = future._job
        assert job is not None
        if self._state == "closed":
            raise SessionClosedError(
                "The executor is shut down: read a job's stdout() and stderr() before shutdown() or the "
                "end of its `with` block."
            )
        return self._portal.call(job.stdout if stream == "stdout" else job.stderr)

    def callback_runner(self, fn: Callable[[Any], object]) -> Callable[[Any], None]:
        """``fn`` as a done callback that runs in the callback thread when called on the loop."""

        def run(future: Any) -> None:
            if threading.get_ident() == self._loop_thread:
                self._callbacks.post(fn, future)
            else:
                call_logged(fn, future)

        return run

    def close(self, mode: CloseMode, *, wait: bool, timeout: float | None = None) -> None:
        """Stop taking work and close the session (``mode`` says how); with ``wait``, until it closed.

        Interrupted while waiting (Ctrl-C), it cancels the live jobs and waits for that, then re-raises.
        """
        with self.lock:
            first = self._state == "open"
            if first:
                self._state = "closing"
                self._close_mode = mode
            elif mode == "cancel" and self._state == "closing":
                escalate = True
            else:
                escalate = False
        if mode == "cancel":
            self._cancel_unfinished()
        if first:
            self._on_loop(self._wake_close)
        elif escalate:
            self._on_loop(self._cancel_session)
        if not wait or threading.get_ident() == self._loop_thread:
            return
        try:
            self._join(timeout)
        except Exception:  # a timeout, or what closing the session raised
            raise
        except BaseException:  # interrupted (Ctrl-C): the jobs must not outlive the program unseen
            if mode != "cancel" and self._state != "closed":
                self._cancel_unfinished()
                self._on_loop(self._cancel_session)
                self._join(timeout)
            raise

    @property
    def closed(self) -> bool:
        return self._state != "open"

    # ------------------------------------------------------------------------------- on the loop
    async def _run_session(self, host: str, options: dict[str, Any], *, task_status: TaskStatus[str]) -> None:
        session = SlurmSession(host, **options)
        error: Exception | None = None
        try:
            # The services outlive the session's block: futures complete while it waits for its jobs.
            async with anyio.create_task_group() as services:
                try:
                    await self._hold_session(session, services, task_status)
                except Exception as exc:  # raised as it is, not wrapped in the services' group
                    error = exc
                await self._completer.complete_finished()
                services.cancel_scope.cancel()
            if error is not None:
                raise error
        finally:
            with self.lock:
                self._state = "closed"
            self._submits.notify_accepted()
            self._completer.fail_all(
                lambda future: SessionClosedError(
                    f"The executor closed before job {future.job_id} ended; it runs on in Slurm, and the "
                    f"journal keeps it: collect it with SlurmExecutor(...).reattach({session.id!r})."
                )
            )
            self._fail_queued(SessionClosedError("The executor closed before this call was submitted."))
            self._callbacks.stop()  # the callback thread ends after what is queued
            await self._portal.stop()

    async def _hold_session(
        self, session: SlurmSession, services: anyio.abc.TaskGroup, task_status: TaskStatus[str]
    ) -> None:
        """Open the session, serve submits until a close is requested, then close it as asked."""
        with anyio.CancelScope() as self._session_scope:
            async with session:
                self._session = session
                services.start_soon(self._cancels.serve, session, lambda: self._close_mode == "cancel")
                services.start_soon(self._completer.run, session)
                async with anyio.create_task_group() as submits:
                    submits.start_soon(
                        self._submits.serve, session, self._track, lambda: self._state == "open"
                    )
                    task_status.started(session.id)
                # Every queued submit has been answered: the session now holds all the jobs.
                if self._close_mode == "detach":
                    left = session.detach()
                    if left:
                        logger.warning(
                            "%d Slurm job(s) of executor session %s run on after it closed; collect them "
                            "with SlurmExecutor(...).reattach(%r)",
                            len(left),
                            session.id,
                            session.id,
                        )
                elif self._close_mode == "cancel":
                    # The session scancels every live job as it closes: queued cancels are covered,
                    # and one under way finishes first, while the connections are still open.
                    await self._cancels.drop_queued()
                    self._session_scope.cancel()

    async def _track(self, pairs: list[tuple[SyncJobFuture[Any], JobFuture[Any]]]) -> None:
        """Give each future its accepted job, and have the completer follow it."""
        with self.lock:  # against SyncJobFuture.cancel: a job known from now on is cancelled there
            for future, job in pairs:
                future._job = job
        follow: list[tuple[SyncJobFuture[Any], JobFuture[Any]]] = []
        for future, job in pairs:
            if future._cancel_seen():
                self.cancel_soon(job)  # cancelled while sbatch ran
            elif self._close_mode == "cancel" and not job.done():
                future.cancel()  # answered after a cancelling shutdown began
            else:
                follow.append((future, job))
        await self._completer.watch(follow)

    async def _map(
        self, fn: Callable[..., T], columns: list[list[Any]], spec: JobSpec | None
    ) -> list[JobFuture[T]]:
        return await self._session.map(fn, *columns, spec=spec)

    async def _reattach(self, session_id: str | None) -> list[JobFuture[Any]]:
        return await self._session.reattach(session_id)

    async def _follow(
        self, futures: list[SyncJobFuture[T]], jobs: list[JobFuture[T]]
    ) -> list[SyncJobFuture[T]]:
        await self._track(list(zip(futures, jobs, strict=True)))
        return futures

    def _wake_close(self) -> None:
        self._submits.wake()

    def _cancel_session(self) -> None:
        self._close_mode = "cancel"
        self._session_scope.cancel()

    # ------------------------------------------------------------------------------- helpers
    def _wake(self, wake: Callable[[], None]) -> None:
        """Run ``wake`` on the loop soon, without waiting for it (nothing if the loop has ended)."""
        if threading.get_ident() == self._loop_thread:
            wake()
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: so has the session
            self._event_loop.call_soon_threadsafe(wake)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop and wait for it (at once when already there); nothing if it has ended."""
        if threading.get_ident() == self._loop_thread:
            fn()
            return
        with contextlib.suppress(RuntimeError):  # the portal has stopped: the session is closed
            self._portal.call(fn)

    def _join(self, timeout: float | None) -> None:
        try:
            self._host.result(timeout)
        except concurrent.futures.CancelledError:
            pass
        finally:
            if self._host.done():
                with self.lock:
                    stop, self._portal_stopped = not self._portal_stopped, True
                if stop:
                    self._portal_context.__exit__(None, None, None)  # joins the loop's thread
                _open_loops.discard(self)
        self._callbacks.join(timeout)

    def _cancel_unfinished(self) -> None:
        with self.lock:
            queued = self._submits.queued()
        for future in queued + self._completer.futures():
            future.cancel()

    def _fail_queued(self, exc: BaseException) -> None:
        with self.lock:
            batch = self._submits.take()
        for call in batch:
            call.future._complete(exc=exc)

    def _require_open(self) -> None:
        if self._state != "open":
            raise SessionClosedError("The executor is shut down: cannot submit new jobs after shutdown().")


@atexit.register
def _leave_jobs_to_the_journal() -> None:
    """At interpreter exit, close what was never shut down without waiting for its jobs."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    for loop in list(_open_loops):
        try:
            loop.close("detach", wait=True, timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            logger.warning("could not close executor session %s at exit: %s", loop.session_id, exc)
