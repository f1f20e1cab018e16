"""The SlurmExecutor's cancel queue: cancels made in any thread leave in one ``scancel``.

A ``SyncJobFuture.cancel()`` from any thread queues its job and returns; the loop sends one scancel
for every job queued meanwhile (a ``map`` left early cancels thousands at once). While a scancel is
under way the executor's session stays open, so that it is not cut short by the close.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio

from ._handoff import Inbox
from .future import JobFuture
from .session import SlurmSession

__all__ = ["CancelQueue"]

logger = logging.getLogger("slurmbatch")


class CancelQueue:
    """Jobs to cancel, put by threads, cancelled together by the executor's loop.

    ``lock`` is the executor's lock: callers hold it around :meth:`put`.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._inbox: Inbox[JobFuture[Any]] = Inbox()
        self._ready: anyio.Event | None = None
        self._sending: anyio.Lock | None = None

    def put(self, job: JobFuture[Any]) -> bool:
        """Queue ``job`` (the caller holds the lock); True if the loop must be woken (:meth:`wake`)."""
        return self._inbox.put(job)

    # ------------------------------------------------------------------------------- on the loop
    def wake(self) -> None:
        """Let :meth:`serve` look at the queue (on the loop)."""
        if self._ready is not None:
            self._ready.set()

    async def serve(self, session: SlurmSession, covered: Callable[[], bool]) -> None:
        """Cancel what threads queue, one scancel per batch, until cancelled.

        Nothing is sent while ``covered()`` says the session cancels every live job anyway (a
        cancelling close).
        """
        self._ready = anyio.Event()
        self._sending = anyio.Lock()
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()
            async with self._sending:
                with self._lock:
                    jobs = self._inbox.take()
                live = [job for job in dict.fromkeys(jobs) if not job.done()]
                if not live or covered():
                    continue
                try:
                    await session.cancel_jobs(live)
                except Exception as exc:
                    logger.warning("could not cancel %d job(s): %s", len(live), exc)

    async def drop_queued(self) -> None:
        """Forget what is queued, once a scancel under way has finished (the session cancels the rest)."""
        if self._sending is None:
            return
        async with self._sending:
            with self._lock:
                self._inbox.take()
