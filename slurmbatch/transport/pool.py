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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TypeVar

import anyio
import asyncssh

from slurmbatch._errors import IncompleteReply

from ._bridge import AsyncioBridge
from ._channel import SFTPUnavailable, start_output_process, start_sftp, stop_process
from ._channels import ChannelAccounting, Connection, _Failure
from ._dialer import Dialer
from ._exec import run_command
from .exec_files import ExecFileSession
from .framing import ScriptFrame
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient, TransferCounter
from .stats import PoolStats
from .stream import LineStream

logger = logging.getLogger("slurmbatch")

__all__ = ["SSHPool"]

T = TypeVar("T")

_CLOSE_TIMEOUT = 5.0  # seconds to wait for the server to confirm a close before giving up on it


class SSHPool(ChannelAccounting):
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
        self._reconnect_deadline = reconnect_deadline

        self._bridge = AsyncioBridge()
        self._slots = anyio.Semaphore(max_connections * max_channels)  # FIFO: requests queue fairly
        self._connect_lock = anyio.Lock()
        self._changed: anyio.Event | None = None
        self._connections: list[Connection] = []
        self._opening = 0
        self._closed = False

        self._dialer = Dialer(
            settings, self._bridge, connect_interval=connect_interval, reconnect_deadline=reconnect_deadline
        )
        self._arrivals = 0
        self._failure: _Failure | None = None
        #: What the login shell's start-up files printed on standard output before a script, if anything.
        self.startup_output = ""
        #: Why files travel over exec channels instead of SFTP, once that was found out; else None.
        self.sftp_unavailable: str | None = None
        #: Bytes of file contents read and written over this pool's SFTP sessions.
        self.transfers = TransferCounter()

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
            connections_opened=self._dialer.opened,
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

        async def run_on(connection: Connection) -> CommandResult:
            with anyio.move_on_after(timeout) as scope:
                return await self._bridge.call(
                    run_command, connection.ssh, command, stdin, target=self._dialer.target
                )
            assert scope.cancelled_caught
            raise TimeoutError(
                f"{command!r} did not finish within {timeout:g} s on {self._dialer.target.address}; "
                "it was sent SIGTERM and its channel closed"
            )

        ticket = self._arrive()
        async with self._slots:
            connection, result = await self._on_a_channel(ticket, run_on)
            self._release(connection)
        return result

    async def script(
        self,
        body: str,
        *,
        data: str | None = None,
        shell: str = "/bin/sh",
        what: str = "a remote command",
        # Not the caller's cancel scope: it excludes queueing for a channel and names the script.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> CommandResult:
        """Run ``body`` under ``shell`` (not the login shell), and return what the body printed.

        The login shell only sees ``exec <shell> -s``; ``body`` (shell lines) travels on standard input,
        framed by markers (see :mod:`~slurmbatch.transport.framing`), so neither a tcsh login shell nor
        the output of start-up files touches it. ``data`` (text) is the body's standard input; without
        it the body reads ``/dev/null``. The result holds the body's own output and exit status.

        Raises:
            IncompleteReply: the reply ended before the body did (the shell died, the channel closed);
                the body may have run partly or fully.
            RemoteEnvironmentError: the script never started (e.g. ``shell`` does not exist there).
            ConnectError, TimeoutError, SessionClosedError: as for :meth:`run`.
        """
        frame = ScriptFrame(shell=shell)
        result = await self.run(frame.command, input=frame.script(body, data), timeout=timeout)
        try:
            reply = frame.parse(result.stdout, result.stderr, what=what)
        except IncompleteReply as incomplete:
            incomplete.host = self._dialer.target.alias
            raise
        if reply.preamble and not self.startup_output:
            self.startup_output = reply.preamble
        return CommandResult(
            command=body,
            exit_status=reply.exit_status,
            stdout=reply.stdout,
            stderr=reply.stderr,
            exit_signal=result.exit_signal,
        )

    @asynccontextmanager
    async def sftp(self) -> AsyncIterator[SFTPClient | ExecFileSession]:
        """Open one SFTP session, for a batch of file operations, and close it when the block ends.

        The session occupies one channel of the pool for the whole block, so keep blocks short and put
        many operations in each.

        Where the login node has no usable SFTP (no subsystem, or start-up files of the login shell that
        print and so garble it), the block gets an `ExecFileSession` instead, with the same methods over
        exec channels, and a warning says once why and how to fix it.

        Cancellation: cancelling the block closes the session without waiting for the server to confirm.

        Raises:
            ConnectError: no connection could be opened.
            SessionClosedError: the pool is closed.
        """

        async def start_on(connection: Connection) -> asyncssh.SFTPClient:
            return await self._bridge.call(start_sftp, connection.ssh, self._settings.connect_timeout)

        unavailable: SFTPUnavailable | None = None
        if self.sftp_unavailable is None:
            ticket = self._arrive()
            async with self._slots:
                try:
                    connection, session = await self._on_a_channel(ticket, start_on)
                except SFTPUnavailable as error:
                    unavailable = error
                else:
                    try:
                        yield SFTPClient(self._bridge, session, self._dialer.target, self.transfers)
                    except BaseException:
                        self._bridge.call_soon(session.exit)
                        raise
                    else:
                        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                            await self._bridge.call(_close_sftp, session)
                    finally:
                        self._release(connection)
                    return
        if unavailable is not None:
            await self._note_sftp_unavailable(unavailable)  # outside the slot: it runs a command itself
        yield ExecFileSession(self)

    async def _note_sftp_unavailable(self, error: SFTPUnavailable) -> None:
        """Say once why files now travel over exec channels, and what would fix it."""
        if error.garbled:
            shell = (await self.script('printf %s "$SHELL"', what="asking for the login shell")).stdout
            printed = f" ({self.startup_output.strip()[:120]!r})" if self.startup_output.strip() else ""
            files = "~/.cshrc or ~/.tcshrc" if shell.endswith("csh") else "~/.bashrc (and files it sources)"
            self.sftp_unavailable = (
                f"SFTP to {self._dialer.target.address} is garbled: sshd starts its sftp-server through your login "
                f"shell {shell or '(unknown)'}, and a start-up file prints to standard output{printed}. "
                f"Files now travel over exec channels, which is slower. To fix it, make {files} print only "
                "in interactive shells: guard the line with `[ -t 1 ] &&` or `case $- in *i*) ... ;; esac` "
                "(bash), or `if ($?prompt) then ... endif` (tcsh)."
            )
        else:
            self.sftp_unavailable = (
                f"{self._dialer.target.address} offers no SFTP subsystem ({error.cause}); files now travel over exec "
                "channels, which is slower. Ask the site whether SFTP can be enabled."
            )
        logger.warning("%s", self.sftp_unavailable)

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

        async with self._stream(command, None, None) as lines:
            yield lines

    @asynccontextmanager
    async def stream_script(self, body: str, *, shell: str = "/bin/sh") -> AsyncIterator[LineStream]:
        """Run ``body`` like :meth:`script` and read its standard output line by line, like :meth:`stream`.

        Lines the login shell's start-up files print come before the begin marker and are skipped; the
        end marker ends the iteration, and `LineStream.exit_status` is then the body's. Output that ends
        without the end marker raises `ConnectError` (the body did not run to its end).
        """
        frame = ScriptFrame(shell=shell)
        async with self._stream(frame.command, frame, frame.script(body).encode()) as lines:
            yield lines

    @asynccontextmanager
    async def _stream(
        self, command: str, frame: ScriptFrame | None, stdin: bytes | None
    ) -> AsyncIterator[LineStream]:
        async def start_on(connection: Connection) -> asyncssh.SSHClientProcess[bytes]:
            return await self._bridge.call(start_output_process, connection.ssh, command, stdin)

        ticket = self._arrive()
        async with self._slots:
            connection, process = await self._on_a_channel(ticket, start_on)
            try:
                yield LineStream(self._bridge, process, command, self._dialer.target, frame=frame)
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
            f"<SSHPool {self._dialer.target.address} connections={len(self._connections)}/{self._max_connections} "
            f"channels={self._channels_in_use()}/{self._max_connections * self._max_channels}>"
        )


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
