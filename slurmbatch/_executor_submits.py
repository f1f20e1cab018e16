"""The SlurmExecutor's submit queue: calls made in any thread, handed to the session together.

Threads put calls without waiting for each other or for the event loop: only the first call since the
loop last took the queue wakes it, and the thread that wakes it does not wait for that. On the loop,
the queue waits while calls keep arriving (a few milliseconds at most), then hands all of them to
``SlurmSession.submit_each`` at once, so that calls made together by many threads become job arrays
and one round trip. Threads waiting for a job id (``wait_accepted``) are woken once per batch that
sbatch answered, not once per job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs

from ._handoff import Inbox
from ._submit_requests import closed_error
from ._sync_future import SyncJobFuture
from .future import JobFuture
from .session import SlurmSession
from .spec import JobSpec

__all__ = ["QueuedCall", "SubmitQueue"]

#: While calls keep arriving from threads, the loop looks again every SETTLE_STEP seconds, for at most
#: SETTLE_TIME seconds, before it hands them to the session together.
SETTLE_STEP = 0.001
SETTLE_TIME = 0.01

#: Hands accepted jobs with their futures to whoever completes the futures.
Track = Callable[[list[tuple[SyncJobFuture[Any], JobFuture[Any]]]], Awaitable[None]]


@attrs.define(eq=False)
class QueuedCall:
    """One ``executor.submit`` call waiting for the loop."""

    future: SyncJobFuture[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    spec: JobSpec | None


class SubmitQueue:
    """Calls put by threads, submitted by the executor's loop; see the module docstring.

    ``lock`` is the executor's lock: callers hold it around :meth:`put`, :meth:`take` and
    :meth:`queued`, together with their own check that the executor is open.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._accepted = threading.Condition(lock)
        self._inbox: Inbox[QueuedCall] = Inbox()
        self._ready: anyio.Event | None = None

    # ------------------------------------------------------------------------------- from threads
    def put(self, call: QueuedCall) -> bool:
        """Queue ``call`` (the caller holds the lock); True if the loop must be woken (:meth:`wake`)."""
        return self._inbox.put(call)

    def take(self) -> list[QueuedCall]:
        """Everything queued (the caller holds the lock)."""
        return self._inbox.take()

    def queued(self) -> list[SyncJobFuture[Any]]:
        """The futures of the calls still queued (the caller holds the lock)."""
        return [call.future for call in self._inbox.snapshot()]

    def wait_accepted(self, future: SyncJobFuture[Any], timeout: float | None) -> str:
        """Wait until sbatch accepted ``future``'s job; return its id (see ``SyncJobFuture.wait_accepted``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._accepted:
            while future._job is None and not future.done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"sbatch had not accepted the job within {timeout} s")
                self._accepted.wait(left)
            job = future._job
        if job is None:
            future.result(0)  # raises what kept it from being submitted (or CancelledError)
            raise AssertionError("a future done without a job must hold an error")  # pragma: no cover
        return job.job_id

    def notify_accepted(self) -> None:
        """Wake the threads in :meth:`wait_accepted` (a job was accepted, or a future was settled)."""
        with self._accepted:
            self._accepted.notify_all()

    # ------------------------------------------------------------------------------- on the loop
    def wake(self) -> None:
        """Let :meth:`serve` look at the queue (on the loop)."""
        if self._ready is not None:
            self._ready.set()

    async def serve(self, session: SlurmSession, track: Track, is_open: Callable[[], bool]) -> None:
        """Submit what threads queue, a batch at a time, until the executor closes.

        Returns once the last calls queued before the close have been answered by sbatch.
        """
        self._ready = anyio.Event()
        async with anyio.create_task_group() as batches:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                await self._settle(is_open)
                with self._lock:
                    batch = self.take()
                    closing = not is_open()
                # A call cancelled before it left is never submitted.
                live = [call for call in batch if not call.future._cancel_seen()]
                if live:
                    batches.start_soon(self._submit, session, track, live)
                if closing:
                    return

    async def _settle(self, is_open: Callable[[], bool]) -> None:
        """Wait while threads are still adding calls, so that they leave together.

        Calls from threads arrive one by one; handed over as they come, the first few would leave alone
        and the rest wait for the next round trip. A lone call waits one step.
        """
        deadline = anyio.current_time() + SETTLE_TIME
        while True:
            with self._lock:
                queued = len(self._inbox)
            await anyio.sleep(SETTLE_STEP)
            with self._lock:
                if len(self._inbox) == queued or not is_open():
                    return
            if anyio.current_time() >= deadline:
                return

    async def _submit(self, session: SlurmSession, track: Track, calls: list[QueuedCall]) -> None:
        try:
            outcomes: list[Any] = await session.submit_each((c.fn, c.args, c.kwargs, c.spec) for c in calls)
        except Exception as exc:  # e.g. the session closed under it: every call of the batch failed
            outcomes = [exc] * len(calls)
        except BaseException:  # cancelled: the futures must not wait for an answer that never comes
            for call in calls:
                call.future._complete(exc=closed_error(under_way=True))
            self.notify_accepted()
            raise
        accepted: list[tuple[SyncJobFuture[Any], JobFuture[Any]]] = []
        for call, outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, JobFuture):
                accepted.append((call.future, outcome))
            else:
                call.future._complete(exc=outcome)
        await track(accepted)
        self.notify_accepted()
