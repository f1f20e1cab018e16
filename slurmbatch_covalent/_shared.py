"""The SlurmSessions a Covalent server shares between its tasks: one per settings and event loop.

Covalent builds a fresh executor instance for every task (several times over) and runs every `run()`
on the server's one event loop. So the sessions live here, at module level: the first task with given
`SessionSettings` opens one, later tasks borrow it, and it closes after
`IDLE_TIMEOUT` seconds without tasks. Every task of a server that uses the same settings therefore
shares one bounded pool of SSH connections and one status loop.

A session is entered and left by a keeper task of its own, never by the tasks that borrow it: anyio cancel
scopes belong to the task that enters them, and a `run()` returns long before the session should close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs

from slurmbatch import JobFuture, SessionClosedError, SlurmSession

from .params import SessionSettings

__all__ = ["IDLE_TIMEOUT", "SessionUnavailableError", "SharedSession", "cancel_job", "lease", "new_session"]

logger = logging.getLogger("slurmbatch.covalent")

IDLE_TIMEOUT = 60.0
"""Seconds a shared session stays open without tasks before it closes (and removes its remote files)."""

_SESSIONS: dict[asyncio.AbstractEventLoop, dict[SessionSettings, SharedSession]] = {}


class SessionUnavailableError(RuntimeError):
    """The shared session could not be opened, or closed while a task needed it; the cause is chained."""


class SharedSession:
    """One [`SlurmSession`][slurmbatch.SlurmSession], kept open by a keeper task and lent to tasks.

    `session` is usable between `ready` and the end of the lease that awaited it. `cancelled`
    holds the ids of jobs that Covalent asked to cancel, so their tasks can report CANCELLED.
    """

    def __init__(self, settings: SessionSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.session: SlurmSession | None = None
        self.error: BaseException | None = None
        self.cancelled: set[str] = set()
        self.closing = False
        self._loop = loop
        self._users = 0
        self._jobs: dict[str, JobFuture[Any]] = {}  # by token: a retry changes the job id, not it
        self._ready = anyio.Event()
        self._closed = anyio.Event()
        self._activity = anyio.Event()
        self._keeper = loop.create_task(self._keep(), name=f"slurmbatch session keeper for {settings.host}")

    # --------------------------------------------------------------------------- borrowing
    async def ready(self) -> SlurmSession:
        """Wait until the session is open and return it; raise `SessionUnavailableError` otherwise."""
        await self._ready.wait()
        if self.session is None or self.error is not None:
            raise SessionUnavailableError(
                f"Could not open a Slurm session on {self.settings.host}: {_describe(self.error)}"
            ) from self.error
        return self.session

    async def wait_closed(self) -> None:
        """Wait until the session has closed (idle, failed, or cancelled with the loop)."""
        await self._closed.wait()

    def borrow(self) -> None:
        """Count one more task using the session (it stays open while any does)."""
        self._users += 1
        self._activity.set()

    def give_back(self) -> None:
        """Count one task less; the idle timer starts when none is left."""
        self._users -= 1
        self._activity.set()

    def track(self, future: JobFuture[Any]) -> None:
        """Remember `future`, so that a cancel request naming any of its job ids can find it."""
        self._jobs[future.token] = future

    def untrack(self, future: JobFuture[Any]) -> None:
        """Forget `future` (its task is over)."""
        self._jobs.pop(future.token, None)
        self.cancelled.difference_update(future.attempts)

    def was_cancelled(self, future: JobFuture[Any]) -> bool:
        """Whether a cancel request named one of `future`'s job ids (a retry has a new one)."""
        return not self.cancelled.isdisjoint(future.attempts)

    def release(self, future: JobFuture[Any]) -> None:
        """Let the finished job's remote files go (removed soon, with others', when `cleanup` is on)."""
        if self.session is not None and future.done():
            with contextlib.suppress(SessionClosedError):
                self.session.release([future])

    def find(self, job_id: str) -> JobFuture[Any] | None:
        """The future of a task still waited for whose job, or one of its earlier attempts, is `job_id`.

        Covalent keeps the handle of the first attempt: a retried job is found by that id too, and
        cancelling the future cancels its latest attempt.
        """
        for future in self._jobs.values():
            if job_id in future.attempts:
                return future
        return None

    # --------------------------------------------------------------------------- keeper
    async def _keep(self) -> None:
        try:
            async with new_session(self.settings) as session:
                self.session = session
                self._ready.set()
                await self._serve_until_idle()
        except Exception as exc:
            self.error = exc
            logger.warning("the shared Slurm session on %s ended: %s", self.settings.host, _describe(exc))
        except BaseException as exc:  # cancelled with the server's loop: let the cancellation through
            self.error = exc
            raise
        finally:
            self.closing = True
            _forget(self)
            self._ready.set()
            self._closed.set()

    async def _serve_until_idle(self) -> None:
        while True:
            activity = self._activity = anyio.Event()
            if self._users:
                await activity.wait()
                continue
            with anyio.move_on_after(IDLE_TIMEOUT):
                await activity.wait()
            # No await between this check and `closing`: a task that arrives later opens a new session.
            if not activity.is_set() and not self._users:
                self.closing = True
                logger.info("closing the idle Slurm session on %s", self.settings.host)
                return


def new_session(settings: SessionSettings) -> SlurmSession:
    """A (not yet opened) [`SlurmSession`][slurmbatch.SlurmSession] with `settings`."""
    session = SlurmSession(settings.host, **settings.session_kwargs())
    if settings.cert_file:
        # SlurmSession takes no certificate argument; its connection settings do.
        session.settings = attrs.evolve(session.settings, cert_files=(settings.cert_file,))
    return session


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "it closed"
    return f"{type(error).__name__}: {error}"


def _sessions_of(loop: asyncio.AbstractEventLoop) -> dict[SessionSettings, SharedSession]:
    for other in [other for other in _SESSIONS if other.is_closed()]:
        del _SESSIONS[other]  # sessions of a loop that is gone died with it
    return _SESSIONS.setdefault(loop, {})


def _forget(entry: SharedSession) -> None:
    sessions = _SESSIONS.get(entry._loop, {})
    if sessions.get(entry.settings) is entry:
        del sessions[entry.settings]


@contextlib.asynccontextmanager
async def lease(settings: SessionSettings) -> AsyncIterator[SharedSession]:
    """Borrow the shared session for `settings` on the running loop, opening it if needed.

    Inside the block, `entry.session` is open and stays open. Raises
    `SessionUnavailableError` if it cannot be opened.
    """
    sessions = _sessions_of(asyncio.get_running_loop())
    entry = sessions.get(settings)
    if entry is None or entry.closing:
        entry = sessions[settings] = SharedSession(settings, asyncio.get_running_loop())
    entry.borrow()
    try:
        await entry.ready()
        yield entry
    finally:
        entry.give_back()


async def cancel_job(settings: SessionSettings, job_id: str) -> bool:
    """Cancel job `job_id` of a live task with `settings` (`scancel`); False if there is none."""
    entry = _sessions_of(asyncio.get_running_loop()).get(settings)
    future = entry.find(job_id) if entry is not None else None
    if entry is None or future is None:
        logger.warning("no running task has Slurm job %s: nothing to cancel", job_id)
        return False
    entry.cancelled.add(job_id)
    return await future.cancel()
