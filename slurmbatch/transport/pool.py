"""A bounded pool of SSH connections, shared by every job of a session.

Limits and behaviour:

* At most ``max_connections`` connections (default 2). They are opened lazily, only when every open one
  is full, and reused until they drop or the pool closes.
* At most one connection attempt per ``connect_interval`` seconds (default 0.2), one handshake at a time:
  sshd's MaxStartups drops handshakes that arrive in bursts.
* At most ``max_channels`` channels in use per connection (default 8). Keep it below the server's
  MaxSessions (OpenSSH's default is 10): sshd frees a session slot a little after the client sees the
  channel close, so a pool running at exactly MaxSessions sees refusals. A refused channel ("open failed")
  is retried after a short random pause and counted in `PoolStats.channel_refusals_retried`; it never
  surfaces as an error unless refusals go on for ``reconnect_deadline`` seconds.
* Requests for a channel queue in arrival order once all ``max_connections * max_channels`` channels are
  in use, and each takes the open connection with the fewest channels in use.
* Idle connections are probed every ``ConnectSettings.keepalive_interval`` seconds. A connection found
  dead is discarded and replaced on next use; reconnecting retries with jittered exponential backoff for
  up to ``reconnect_deadline`` seconds (default 60), then raises `ConnectError`. Failures no waiting can
  fix (authentication, host key, unknown host) raise at once, and so do a refused port and a timeout
  before any connection to the host has succeeded.
* A command whose connection drops while it runs is not retried, since it may have run: `run` raises
  `ConnectError`. A request whose channel never opened is retried on a new connection.
* Cancelling `run` sends the remote command SIGTERM (see `SSHPool.run` for when sshd cannot deliver it).
* A `stream` holds one channel for as long as its block runs, counted against the limits like any other.
* Output is held in memory; commands are for control traffic, not bulk data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TypeVar

import anyio
import asyncssh
import attrs

from slurmbatch._errors import ConnectError, SessionClosedError, SlurmBatchError

from ._backoff import reconnect_delays, refusal_pause
from ._bridge import AsyncioBridge
from ._channel import ChannelNotOpened, start_output_process, start_sftp, stop_process
from ._connect import Route, connect, explain, is_throttling, is_unreachable, load_route, target_of
from ._exec import run_command
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient
from .stats import PoolStats
from .stream import LineStream

logger = logging.getLogger("slurmbatch")

__all__ = ["SSHPool"]

T = TypeVar("T")

_CLOSE_TIMEOUT = 5.0  # seconds to wait for the server to confirm a close before giving up on it


class _Connection:
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


class SSHPool:
    """A bounded pool of SSH connections to one login node, for asyncio and trio callers.

    Use it as an async context manager, or call `aclose` when done::

        async with SSHPool(ConnectSettings(host="login.cluster.org")) as pool:
            result = await pool.run("squeue --me")
            async with pool.sftp() as sftp:
                await sftp.put("/scratch/me/args.pkl", data)

    A pool serves one event loop run: the first call binds it to the running asyncio loop or trio run.

    Args:
        settings: Where and how to connect.
        max_connections: Most connections to open (1 to 64).
        max_channels: Most channels in use at once per connection (1 to 64); keep it below the server's
            MaxSessions.
        connect_interval: Fewest seconds between two connection attempts.
        reconnect_deadline: Seconds to keep retrying a lost connection (and a refused channel) before
            raising `ConnectError`.
    """

    def __init__(
        self,
        settings: ConnectSettings,
        *,
        max_connections: int = 2,
        max_channels: int = 8,
        connect_interval: float = 0.2,
        reconnect_deadline: float = 60.0,
    ) -> None:
        self.check_limits(
            max_connections=max_connections, max_channels=max_channels, reconnect_deadline=reconnect_deadline
        )
        _check_seconds("connect_interval", connect_interval, zero_ok=True)
        self._settings = settings
        self._max_connections = max_connections
        self._max_channels = max_channels
        self._connect_interval = connect_interval
        self._reconnect_deadline = reconnect_deadline

        self._bridge = AsyncioBridge()
        self._slots = anyio.Semaphore(max_connections * max_channels)  # FIFO: requests queue fairly
        self._connect_lock = anyio.Lock()
        self._changed: anyio.Event | None = None
        self._connections: list[_Connection] = []
        self._opening = 0
        self._closed = False

        self._route: Route | None = None
        self._target = target_of(settings, None)
        self._ever_connected = False
        self._outage_since: float | None = None
        self._last_attempt_at: float | None = None
        self._arrivals = 0
        self._failure: _Failure | None = None

        self._opened = 0
        self._lost = 0
        self._refusals = 0
        self._peak = 0

    @staticmethod
    def check_limits(*, max_connections: int, max_channels: int, reconnect_deadline: float) -> None:
        """Raise :class:`ValueError`, naming the setting, unless these bounds can make a pool."""
        _check_count("max_connections", max_connections)
        _check_count("max_channels", max_channels)
        _check_seconds("reconnect_deadline", reconnect_deadline, zero_ok=False)

    @property
    def settings(self) -> ConnectSettings:
        """The connection settings."""
        return self._settings

    @property
    def capacity(self) -> int:
        """The most channels in use at once over all connections: ``max_connections * max_channels``."""
        return self._max_connections * self._max_channels

    @property
    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters."""
        return PoolStats(
            connections_opened=self._opened,
            connections_lost=self._lost,
            channel_refusals_retried=self._refusals,
            channels_in_use_peak=self._peak,
            connections_open=len(self._connections),
            channels_in_use=self._channels_in_use(),
        )

    async def run(
        self,
        command: str,
        *,
        input: str | bytes | None = None,
        # Not the caller's cancel scope: it excludes queueing for a channel and names the command.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> CommandResult:
        """Run ``command`` through the remote login shell and return what it printed and its exit status.

        A non-zero exit status is returned, not raised. ``input`` (``str`` is UTF-8 encoded) is fed to
        the command's standard input, which is then closed; without it the command reads end of file.

        ``timeout`` bounds the seconds the command may run once its channel is open (waiting for a free
        channel is not counted); past it the command is sent SIGTERM and `TimeoutError` raised.

        Cancellation: cancelling the caller sends the remote command SIGTERM, closes its channel without
        waiting for it to exit, and affects no other request. sshd delivers the signal to the command's
        process group, except for root logins (no privilege separation) and before OpenSSH 7.9; there
        the command runs on until it ends or writes to its closed output.

        Raises:
            ConnectError: no connection could be opened, or it dropped while the command ran (the command
                may or may not have run).
            TimeoutError: the command ran longer than ``timeout``.
            SessionClosedError: the pool is closed.
        """
        stdin = input.encode("utf-8") if isinstance(input, str) else input

        async def run_on(connection: _Connection) -> CommandResult:
            with anyio.move_on_after(timeout) as scope:
                return await self._bridge.call(
                    run_command, connection.ssh, command, stdin, target=self._target
                )
            assert scope.cancelled_caught
            raise TimeoutError(
                f"{command!r} did not finish within {timeout:g} s on {self._target.address}; "
                "it was sent SIGTERM and its channel closed"
            )

        ticket = self._arrive()
        async with self._slots:
            connection, result = await self._on_a_channel(ticket, run_on)
            self._release(connection)
        return result

    @asynccontextmanager
    async def sftp(self) -> AsyncIterator[SFTPClient]:
        """Open one SFTP session, for a batch of file operations, and close it when the block ends.

        The session occupies one channel of the pool for the whole block, so keep blocks short and put
        many operations in each.

        Cancellation: cancelling the block closes the session without waiting for the server to confirm.

        Raises:
            ConnectError: no connection could be opened.
            SessionClosedError: the pool is closed.
        """

        async def start_on(connection: _Connection) -> asyncssh.SFTPClient:
            return await self._bridge.call(start_sftp, connection.ssh)

        ticket = self._arrive()
        async with self._slots:
            connection, session = await self._on_a_channel(ticket, start_on)
            try:
                yield SFTPClient(self._bridge, session, self._target)
            except BaseException:
                self._bridge.call_soon(session.exit)
                raise
            else:
                with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    await self._bridge.call(_close_sftp, session)
            finally:
                self._release(connection)

    @asynccontextmanager
    async def stream(self, command: str) -> AsyncIterator[LineStream]:
        """Start ``command`` and read its standard output line by line while the block runs.

        For long-running commands that report as they go::

            async with pool.stream("tail -F run.log") as lines:
                async for line in lines:
                    ...

        The command runs through the remote login shell and holds one channel of the pool for the whole
        block. It reads end of file on standard input, and its standard error is discarded (redirect it
        with ``2>&1`` to read it). Iteration stops when the command closes its output; the
        `LineStream` then tells its exit status.

        Leaving the block, however it is left, sends the command SIGTERM and closes its channel (see
        `run` for when sshd cannot deliver the signal: a command that keeps printing then ends at its next
        write to the closed channel).

        Cancellation: cancelling the block stops the command as above without waiting for the server;
        cancelling only a wait for the next line loses no output (see `LineStream`).

        Raises:
            ConnectError: no connection could be opened; while iterating, the connection dropped.
            SessionClosedError: the pool is closed.
        """

        async def start_on(connection: _Connection) -> asyncssh.SSHClientProcess[bytes]:
            return await self._bridge.call(start_output_process, connection.ssh, command)

        ticket = self._arrive()
        async with self._slots:
            connection, process = await self._on_a_channel(ticket, start_on)
            try:
                yield LineStream(self._bridge, process, command, self._target)
            except BaseException:
                self._bridge.call_soon(stop_process, process)
                raise
            else:
                with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    await self._bridge.call(_stop_process_and_wait, process)
            finally:
                self._release(connection)

    async def aclose(self) -> None:
        """Close every connection and stop the background event loop, if one runs. Idempotent.

        Requests still waiting raise `SessionClosedError`; commands still running lose their connection.
        Closing is shielded from cancellation and waits at most a few seconds for the server.
        """
        if self._closed:
            return
        self._closed = True
        self._notify()
        connections, self._connections = self._connections, []
        with anyio.CancelScope(shield=True):
            for connection in connections:
                with anyio.move_on_after(_CLOSE_TIMEOUT):
                    await self._bridge.call(_close_connection, connection.ssh)
            await self._bridge.aclose()

    async def __aenter__(self) -> SSHPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<SSHPool {self._target.address} connections={len(self._connections)}/{self._max_connections} "
            f"channels={self._channels_in_use()}/{self._max_connections * self._max_channels}>"
        )

    # -- channels ---------------------------------------------------------------------------------------

    async def _on_a_channel(
        self, ticket: int, operation: Callable[[_Connection], Awaitable[T]]
    ) -> tuple[_Connection, T]:
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
                        f"{self._target.address} refused every channel for {self._reconnect_deadline:g} s "
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

    async def _claim(self, ticket: int) -> _Connection:
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

    def _take(self, connection: _Connection) -> None:
        connection.channels += 1
        self._peak = max(self._peak, self._channels_in_use())

    def _release(self, connection: _Connection) -> None:
        connection.channels -= 1
        self._notify()

    def _channels_in_use(self) -> int:
        return sum(connection.channels for connection in self._connections)

    # -- connections ------------------------------------------------------------------------------------

    async def _open_connection(self, ticket: int) -> _Connection:
        self._opening += 1
        try:
            async with self._connect_lock:
                if self._failure is not None and ticket <= self._failure.ticket:
                    raise self._failure.again()
                ssh = await self._connect_with_retries()
        except ConnectError as error:
            self._failure = _Failure(error, self._arrivals)
            raise
        finally:
            self._opening -= 1
            self._notify()
        connection = _Connection(ssh)
        self._connections.append(connection)
        return connection

    async def _connect_with_retries(self) -> asyncssh.SSHClientConnection:
        delays = reconnect_delays()
        while True:
            await self._pace()
            try:
                if self._route is None:
                    self._route = await self._bridge.call(load_route, self._settings)
                    self._target = target_of(self._settings, self._route)
                ssh = await self._bridge.call(connect, self._settings, self._route)
            except SlurmBatchError:
                raise
            except Exception as error:
                pause = self._pause_before_retry(error, next(delays))
                if pause is None:
                    raise self._give_up(error) from error
                logger.info(
                    "connecting to %s failed (%s); retrying in %.1f s", self._settings.host, error, pause
                )
                await anyio.sleep(pause)
            else:
                self._opened += 1
                logger.info(
                    "SSH connection %d to %s opened (%d open)",
                    self._opened,
                    self._settings.host,
                    len(self._connections) + 1,
                )
                self._ever_connected = True
                self._outage_since = None
                self._failure = None
                return ssh

    async def _pace(self) -> None:
        """Keep connection attempts at least ``connect_interval`` seconds apart."""
        if self._last_attempt_at is not None:
            await anyio.sleep(max(0.0, self._last_attempt_at + self._connect_interval - anyio.current_time()))
        self._last_attempt_at = anyio.current_time()

    def _pause_before_retry(self, error: Exception, delay: float) -> float | None:
        """Seconds to wait before trying again, or None if waiting cannot help or the deadline passed."""
        if not (is_throttling(error) or (self._ever_connected and is_unreachable(error))):
            return None
        now = anyio.current_time()
        if self._outage_since is None:
            self._outage_since = now
        remaining = self._outage_since + self._reconnect_deadline - now
        return min(delay, remaining) if remaining > 0 else None

    def _give_up(self, error: Exception) -> ConnectError:
        explained = explain(self._settings, self._route, error)
        if self._outage_since is None:
            return explained
        waited = anyio.current_time() - self._outage_since
        self._outage_since = None  # the next request gets a fresh reconnect_deadline
        return ConnectError(
            f"{explained} Gave up after retrying for {waited:.1f} s (reconnect_deadline={self._reconnect_deadline:g}).",
            host=explained.host,
            cause=error,
        )

    def _discard(self, connection: _Connection) -> None:
        """Forget a dead connection; its requests in flight fail on their own."""
        if connection in self._connections:
            self._connections.remove(connection)
            self._lost += 1
            logger.warning("SSH connection to %s lost; it is replaced on next use", self._settings.host)
            if self._outage_since is None:
                self._outage_since = anyio.current_time()
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


async def _close_sftp(session: asyncssh.SFTPClient) -> None:
    session.exit()
    await session.wait_closed()


async def _stop_process_and_wait(process: asyncssh.SSHClientProcess[bytes]) -> None:
    stop_process(process)
    await process.wait_closed()


async def _close_connection(ssh: asyncssh.SSHClientConnection) -> None:
    ssh.close()
    await ssh.wait_closed()


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        hint = (
            " Keep it below the login node's sshd MaxSessions (OpenSSH's default is 10)."
            if name == "max_channels"
            else " Two or three connections are plenty; login nodes limit how many one user may open."
        )
        raise ValueError(f"{name} must be a whole number from 1 to 64, got {value!r}.{hint}")


def _check_seconds(name: str, value: float, *, zero_ok: bool) -> None:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or value < 0 or (value == 0 and not zero_ok):
        kind = "zero or a positive" if zero_ok else "a positive"
        raise ValueError(f"{name} must be {kind} number of seconds, got {value!r}")
