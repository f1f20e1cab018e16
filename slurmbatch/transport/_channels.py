"""Which connection serves the next channel: the pool's accounting of connections and channels in use.

`ChannelAccounting` is `SSHPool`'s half that hands out channels: the least busy live connection takes the
next one, a new connection is opened (through the pool's `Dialer`) only when every open one is full, a
channel the server refuses is retried after a pause, and requests that waited on a failed connection
attempt fail with its error instead of trying again each.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import asyncssh
import attrs

from slurmbatch._errors import ConnectError, SessionClosedError

from ._backoff import refusal_pause
from ._bridge import AsyncioBridge
from ._channel import ChannelNotOpened
from ._dialer import Dialer
from .settings import ConnectSettings

logger = logging.getLogger("slurmbatch")

__all__ = ["ChannelAccounting", "Connection"]

T = TypeVar("T")


class Connection:
    """One pooled connection and how many of its channels are in use."""

    __slots__ = ("channels", "ssh")

    def __init__(self, ssh: asyncssh.SSHClientConnection) -> None:
        self.ssh = ssh
        self.channels = 0


@attrs.frozen
class _Failure:
    """The last failed connection attempt, and the last request that arrived before it."""

    error: ConnectError
    ticket: int

    def again(self) -> ConnectError:
        """A fresh copy for another waiting request (an exception object is raised only once)."""
        return ConnectError(str(self.error), host=self.error.host, cause=self.error.cause)


class ChannelAccounting:
    """Connections and the channels in use on each; `SSHPool` sets the attributes below."""

    _settings: ConnectSettings
    _max_connections: int
    _max_channels: int
    _reconnect_deadline: float
    _bridge: AsyncioBridge
    _connect_lock: anyio.Lock
    _changed: anyio.Event | None
    _connections: list[Connection]
    _opening: int
    _closed: bool
    _dialer: Dialer
    _arrivals: int
    _failure: _Failure | None
    _lost: int
    _refusals: int
    _peak: int

    async def _on_a_channel(
        self, ticket: int, operation: Callable[[Connection], Awaitable[T]]
    ) -> tuple[Connection, T]:
        """Run ``operation`` with a channel of some connection, retrying while no channel opens.

        On success the channel stays counted as in use; the caller releases it.
        """
        first_refusal_at: float | None = None
        refusals = 0
        while True:
            connection = await self._claim(ticket)
            try:
                return connection, await operation(connection)
            except ChannelNotOpened as error:
                self._release(connection)
                if not error.refused:
                    self._discard(connection)
                    continue
                self._refusals += 1
                refusals += 1
                logger.debug("the server refused a channel (MaxSessions); retrying")
                now = anyio.current_time()
                first_refusal_at = now if first_refusal_at is None else first_refusal_at
                if now - first_refusal_at > self._reconnect_deadline:
                    raise ConnectError(
                        f"{self._dialer.target.address} refused every channel for {self._reconnect_deadline:g} s "
                        f"({refusals} attempts): its MaxSessions is lower than this pool can use, or 0. "
                        "Lower max_channels.",
                        host=self._settings.host,
                        cause=error.cause,
                    ) from error.cause
                await anyio.sleep(refusal_pause(refusals))
            except ConnectError as error:
                self._release(connection)
                if self._closed:
                    raise SessionClosedError(
                        "the SSH connection pool was closed while a command ran"
                    ) from error
                raise
            except BaseException:
                self._release(connection)
                raise

    async def _claim(self, ticket: int) -> Connection:
        """Take a channel on the least busy live connection, opening a connection if all are full."""
        while True:
            if self._closed:
                raise SessionClosedError("the SSH connection pool is closed; open a new one")
            for connection in [c for c in self._connections if c.ssh.is_closed()]:
                self._discard(connection)
            free = [c for c in self._connections if c.channels < self._max_channels]
            if free:
                connection = min(free, key=lambda c: c.channels)
                self._take(connection)
                return connection
            if self._failure is not None and ticket <= self._failure.ticket:
                raise self._failure.again()  # we waited on that attempt: it failed for us too
            if len(self._connections) + self._opening < self._max_connections:
                connection = await self._open_connection(ticket)
                self._take(connection)
                return connection
            await self._wait_for_change()

    def _take(self, connection: Connection) -> None:
        connection.channels += 1
        self._peak = max(self._peak, self._channels_in_use())

    def _release(self, connection: Connection) -> None:
        connection.channels -= 1
        self._notify()

    def _channels_in_use(self) -> int:
        return sum(connection.channels for connection in self._connections)

    # -- connections ------------------------------------------------------------------------------------

    async def _open_connection(self, ticket: int) -> Connection:
        self._opening += 1
        try:
            async with self._connect_lock:
                if self._failure is not None and ticket <= self._failure.ticket:
                    raise self._failure.again()
                ssh = await self._dialer.dial(len(self._connections))
                self._failure = None
        except ConnectError as error:
            self._failure = _Failure(error, self._arrivals)
            raise
        finally:
            self._opening -= 1
            self._notify()
        connection = Connection(ssh)
        self._connections.append(connection)
        return connection

    def _discard(self, connection: Connection) -> None:
        """Forget a dead connection; its requests in flight fail on their own."""
        if connection in self._connections:
            self._connections.remove(connection)
            self._lost += 1
            logger.warning("SSH connection to %s lost; it is replaced on next use", self._settings.host)
            self._dialer.outage_started()
            self._bridge.call_soon(connection.ssh.abort)

    def _arrive(self) -> int:
        self._arrivals += 1
        return self._arrivals

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()
