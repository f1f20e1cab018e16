"""Running an operation again after the connection dropped under it, until a deadline.

Only for operations that are safe to repeat (reads, idempotent writes, a cancel, and a submission that
first finds out what the lost attempt did). The pool opens the new connection, with its own jittered
backoff; this bounds the whole outage.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._errors import ConnectError, ConnectionLost

__all__ = ["Outage", "one_connect_error", "retry_lost", "sole_error"]

logger = logging.getLogger("slurmbatch")
T = TypeVar("T")


class Outage:
    """Times one stretch of failures (lost connections, an unanswering controller) against ``deadline``
    seconds."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.since: float | None = None
        self.losses = 0

    def failed(self) -> bool:
        """Count one failure now; return whether the outage is still within its deadline."""
        now = anyio.current_time()
        if self.since is None:
            self.since = now
        self.losses += 1
        return now - self.since <= self.deadline

    def lost(self, error: ConnectionLost, what: str) -> float:
        """Count a loss; return the seconds to pause before trying again, or raise once past the deadline."""
        if not self.failed():
            assert self.since is not None
            raise ConnectError(
                f"{what} failed: the connection to the login node kept dropping for "
                f"{anyio.current_time() - self.since:.0f} s "
                f"({self.losses} times), past reconnect_deadline={self.deadline:g} s. Last: {error}",
                host=error.host,
                cause=error,
            ) from error
        logger.warning("%s: connection lost (%s); trying again on a new connection", what, error)
        return min(2.0, 0.05 * 2.0 ** min(self.losses, 6)) * random.uniform(0.5, 1.0)

    def over(self) -> None:
        """The connection works again."""
        self.since = None
        self.losses = 0


def sole_error(error: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of a single member, else ``error`` itself."""
    # Duck-typed: ExceptionGroup is a builtin only from Python 3.11 on (a backport before).
    while True:
        members = getattr(error, "exceptions", None)
        if not (isinstance(members, tuple) and len(members) == 1 and isinstance(members[0], BaseException)):
            return error
        error = members[0]


async def retry_lost(operation: Callable[[], Awaitable[T]], *, deadline: float, what: str) -> T:
    """Await ``operation()``, again after each :class:`ConnectionLost`, for up to ``deadline`` seconds."""
    outage = Outage(deadline)
    while True:
        try:
            return await operation()
        except ConnectionLost as error:
            await anyio.sleep(outage.lost(error, what))


def one_connect_error(error: Exception) -> Exception:
    """The status queries and the loop's own commands may lose the connection at the same moment: one
    ``ConnectError`` then stands for all of them (the final one, if the outage is past the deadline), so
    that the session sees an outage rather than a crash."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        members = getattr(current, "exceptions", None)
        if isinstance(members, tuple):
            pending += [m for m in members if isinstance(m, BaseException)]
        else:
            leaves.append(current)
    connect = [e for e in leaves if isinstance(e, ConnectError)]
    if len(leaves) < 2 or len(connect) < len(leaves):
        return error
    final = [e for e in connect if not isinstance(e, ConnectionLost)]
    return (final or connect)[0]
