"""Reads of small remote files that arrive together share one SFTP session.

Many jobs finishing at once have their stdout and stderr read at once (Covalent reads both for every
task). One SFTP session per read would open and close a channel each time, and sshd frees its session
slots a little late, so bursts of them run into MaxSessions. Here the reads queue for a few
milliseconds and go out together; the batch runs in the session's task group, so a caller that gives up
waiting cancels nobody else's read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import attrs
from anyio.abc import TaskGroup

from ._errors import SessionClosedError

__all__ = ["BatchedReader"]

ReadMany = Callable[[list[str]], Awaitable[dict[str, bytes | None]]]


@attrs.define(eq=False)
class _Waiter:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    data: bytes | None = None
    error: Exception | None = None


class BatchedReader:
    """Reads files through ``read_many``, batching the requests that arrive within ``window`` seconds."""

    def __init__(self, read_many: ReadMany, task_group: TaskGroup, *, window: float = 0.005) -> None:
        self._read_many = read_many
        self._tg = task_group
        self._window = window
        self._pending: dict[str, list[_Waiter]] = {}
        self._scheduled = False

    async def read(self, path: str) -> bytes | None:
        """The file's contents, or ``None`` if it does not exist."""
        waiter = _Waiter()
        self._pending.setdefault(path, []).append(waiter)
        if not self._scheduled:
            self._scheduled = True
            self._tg.start_soon(self._serve)
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.data

    async def _serve(self) -> None:
        batch: dict[str, list[_Waiter]] = {}
        try:
            await anyio.sleep(self._window)
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    found = await self._read_many(list(batch))
                except Exception as exc:
                    _finish(batch, error=exc)
                    continue
                _finish(batch, found=found)
        finally:
            self._scheduled = False
            # Cancelled with the session: nobody may wait forever.
            closed = SessionClosedError("The session closed before the file could be read.")
            _finish(batch, error=closed)
            _finish(self._pending, error=closed)
            self._pending = {}


def _finish(
    batch: dict[str, list[_Waiter]],
    *,
    found: dict[str, bytes | None] | None = None,
    error: Exception | None = None,
) -> None:
    for path, waiters in batch.items():
        for waiter in waiters:
            if waiter.done.is_set():
                continue
            waiter.data, waiter.error = (found or {}).get(path), error
            waiter.done.set()
