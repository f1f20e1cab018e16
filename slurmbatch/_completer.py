"""Completing a SlurmExecutor's futures from the session's JobFutures, on the executor's loop.

One task for every watched job, not one task per job: it waits for the session's progress event (set
whenever any job finishes) and then completes the futures of the jobs that finished. A map of ten
thousand calls costs ten thousand list entries, not ten thousand tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._sync_future import SyncJobFuture
from .future import JobFuture
from .session import SlurmSession

__all__ = ["FutureCompleter"]


class FutureCompleter:
    """The executor's futures whose jobs have not finished yet, each with its job's future."""

    def __init__(self) -> None:
        self._watching: list[tuple[SyncJobFuture[Any], JobFuture[Any]]] = []

    def futures(self) -> list[SyncJobFuture[Any]]:
        """The futures still watched (safe to call from any thread: a snapshot)."""
        return [future for future, _ in list(self._watching)]

    async def watch(self, pairs: list[tuple[SyncJobFuture[Any], JobFuture[Any]]]) -> None:
        """Complete each future from its job once that finishes (at once if it has)."""
        for future, job in pairs:
            if job.done():
                await _complete_from(future, job)
            else:
                self._watching.append((future, job))

    async def run(self, session: SlurmSession) -> None:
        """Complete futures as the session learns that their jobs finished, until cancelled."""
        while True:
            progress = session.progress_event()  # taken before the scan: nothing finishes unseen
            await self.complete_finished()
            await progress.wait()

    async def complete_finished(self) -> None:
        """Complete the futures whose jobs have finished; forget those cancelled meanwhile."""
        still: list[tuple[SyncJobFuture[Any], JobFuture[Any]]] = []
        for future, job in self._watching:
            if job.done():
                await _complete_from(future, job)
            elif not future._cancel_seen():
                still.append((future, job))
        self._watching = still

    def fail_all(self, error: Callable[[SyncJobFuture[Any]], BaseException]) -> None:
        """Fail every future still watched with ``error(future)`` (their jobs' outcome is out of reach)."""
        watching, self._watching = self._watching, []
        for future, _ in watching:
            future._complete(exc=error(future))


async def _complete_from(future: SyncJobFuture[Any], job: JobFuture[Any]) -> None:
    exc = job.exception()
    if exc is not None:
        future._complete(exc=exc)
    else:
        future._complete(await job.result())  # finished: returns at once
