"""A transport through the user's own OpenSSH ControlMaster: no login of ours, no key needed.

Many multi-factor sites are used through one terminal login that others share: ``ControlMaster auto``
and ``ControlPath`` in ``~/.ssh/config`` keep a master connection, and every later ``ssh`` to that host
runs over it without authenticating again. asyncssh cannot attach to such a master, so this transport
runs the system ``ssh`` client, ``ssh -S <ControlPath> host command``, once per command, with the same
contract as `SSHPool`:

* At most ``max_channels`` ``ssh`` processes at once (each is one session channel of the master, so
  keep it below the server's MaxSessions); more requests queue in arrival order.
* Scripts are framed as over asyncssh (:mod:`~slurmbatch.transport.framing`); files travel over exec
  channels (`ExecFileSession`), as the master has no SFTP session to lend.
* A command whose master went away while it ran raises `ConnectionLost` (it may have run); a command
  that could not reach the master waits up to ``reconnect_deadline`` seconds for it to come back (the
  user logging in again), then raises `ConnectError` saying to run ``ssh host`` in a terminal.
* Cancelling a command ends its ``ssh`` process; the master closes the command's channel, and sshd
  hangs the command up as it does for any session whose client went away.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import anyio

from slurmbatch._errors import ConnectError, ConnectionLost, IncompleteReply, SessionClosedError

from ._ssh_process import ProcessLines, communicate, end_process
from .exec_files import ExecFileSession
from .framing import ScriptFrame
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient, TransferCounter
from .stats import PoolStats

logger = logging.getLogger("slurmbatch")

__all__ = ["OpenSSHTransport", "find_control_path"]

_MASTER_POLL = 0.5  # seconds between checks of a master that is gone, while waiting for it
_LOOKUP_TIMEOUT = 10.0  # seconds for `ssh -G` and `ssh -O check` when looking for a master
_SSH_FAILED = 255  # ssh's own exit status for its own failures


def _ssh_argv(settings: ConnectSettings) -> list[str]:
    """``ssh`` with the user's config (or none), user and port, up to but without the destination."""
    argv = ["ssh", "-F", settings.ssh_config[0] if settings.ssh_config else "/dev/null"]
    if settings.user is not None:
        argv += ["-l", settings.user]
    if settings.port is not None:
        argv += ["-p", str(settings.port)]
    return argv


async def find_control_path(settings: ConnectSettings) -> str | None:
    """The ControlPath the ssh config gives ``settings.host``, if a master answers on it; else None."""
    if not settings.ssh_config or shutil.which("ssh") is None:
        return None
    # Bounded: a config whose `Match exec` hangs must not hold the session's opening up.
    with anyio.move_on_after(_LOOKUP_TIMEOUT):
        described = await anyio.run_process(
            [*_ssh_argv(settings), "-G", settings.host], check=False, stdin=subprocess.DEVNULL
        )
        for line in described.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "controlpath" and value.strip() not in ("", "none"):
                path = value.strip()
                checked = await anyio.run_process(
                    [*_ssh_argv(settings), "-S", path, "-O", "check", settings.host],
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
                return path if checked.returncode == 0 else None
    return None


class OpenSSHTransport:
    """Commands, scripts and files over an existing OpenSSH ControlMaster (see the module docstring).

    Args:
        settings: The login node; ``host`` (an alias of ``ssh_config[0]``, or a name), ``user`` and
            ``port`` are handed to ``ssh``. Keys and known_hosts are the master's business.
        control_path: The master's socket (``ControlPath``).
        max_channels: Most ``ssh`` processes at once (1 to 64), below the server's MaxSessions.
        reconnect_deadline: Seconds to wait for a master that is gone to come back before failing.
    """

    def __init__(
        self,
        settings: ConnectSettings,
        *,
        control_path: str,
        max_channels: int = 8,
        reconnect_deadline: float = 60.0,
    ) -> None:
        if shutil.which("ssh") is None:
            raise ConnectError(
                "transport='openssh' runs the OpenSSH client, and no `ssh` program is on PATH here. "
                "Install OpenSSH, or leave transport out to connect with asyncssh.",
                host=settings.host,
            )
        self._settings = settings
        self._control_path = control_path
        self._max_channels = max_channels
        self._reconnect_deadline = reconnect_deadline
        self._slots = anyio.Semaphore(max_channels)
        self._in_use = 0
        self._peak = 0
        self._lost = 0
        self._closed = False
        #: What the login shell's start-up files printed on standard output before a script, if anything.
        self.startup_output = ""
        self.transfers = TransferCounter()
        #: Files always travel over exec channels here; this says so.
        self.sftp_unavailable: str | None = (
            "files travel over exec channels of the OpenSSH ControlMaster (it lends no SFTP session)"
        )

    @property
    def settings(self) -> ConnectSettings:
        """The connection settings."""
        return self._settings

    @property
    def capacity(self) -> int:
        """The most commands at once: ``max_channels`` (one master, one connection)."""
        return self._max_channels

    @property
    def stats(self) -> PoolStats:
        """Counters as `SSHPool` keeps them; the master counts as the one connection, never opened by us."""
        return PoolStats(
            connections_opened=0,
            connections_lost=self._lost,
            channels_in_use_peak=self._peak,
            connections_open=0 if self._closed else 1,
            channels_in_use=self._in_use,
        )

    async def check(self) -> None:
        """Raise `ConnectError` in plain words unless the master answers (``ssh -O check``)."""
        alive, why = await self._master_alive()
        if not alive:
            raise self._master_gone(why)

    async def run(
        self,
        command: str,
        *,
        input: str | bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - excludes queueing, as in SSHPool.run
    ) -> CommandResult:
        """Run ``command`` through the remote login shell, as `SSHPool.run` does.

        Raises:
            ConnectError: the master is gone and did not come back within ``reconnect_deadline``.
            ConnectionLost: the master went away while the command ran (it may have run).
            TimeoutError: the command ran longer than ``timeout``.
            SessionClosedError: the transport is closed.
        """
        stdin = input.encode("utf-8") if isinstance(input, str) else (input or b"")
        waited_since: float | None = None
        while True:
            async with self._channel():
                status, stdout, stderr = await self._run_ssh(command, stdin, timeout)
            if status != _SSH_FAILED:
                break
            alive, why = await self._master_alive()
            if alive:
                break  # the remote command itself exited 255
            if not _never_reached_master(stderr):
                self._lost += 1
                raise ConnectionLost(
                    f"the OpenSSH ControlMaster for {self._settings.host} went away while {command[:80]!r} "
                    f"ran ({stderr.strip()[-200:] or why}); it may or may not have run",
                    host=self._settings.host,
                )
            now = anyio.current_time()
            waited_since = now if waited_since is None else waited_since
            if now - waited_since >= self._reconnect_deadline:
                raise self._master_gone(why)
            await anyio.sleep(_MASTER_POLL)
        return CommandResult(command=command, exit_status=status, stdout=stdout, stderr=stderr)

    async def script(
        self,
        body: str,
        *,
        data: str | None = None,
        shell: str = "/bin/sh",
        what: str = "a remote command",
        timeout: float | None = None,  # noqa: ASYNC109 - as in SSHPool.script
    ) -> CommandResult:
        """Run ``body`` under ``shell``, framed, as `SSHPool.script` does; same errors."""
        frame = ScriptFrame(shell=shell)
        result = await self.run(frame.command, input=frame.script(body, data), timeout=timeout)
        try:
            reply = frame.parse(result.stdout, result.stderr, what=what)
        except IncompleteReply as incomplete:
            incomplete.host = self._settings.host
            raise
        if reply.preamble and not self.startup_output:
            self.startup_output = reply.preamble
        return CommandResult(
            command=body, exit_status=reply.exit_status, stdout=reply.stdout, stderr=reply.stderr
        )

    @asynccontextmanager
    async def sftp(self) -> AsyncIterator[SFTPClient | ExecFileSession]:
        """File operations for a batch of files: over exec channels, one command per call."""
        self._require_open()
        yield ExecFileSession(self)

    @asynccontextmanager
    async def stream(self, command: str) -> AsyncIterator[ProcessLines]:
        """Run ``command`` and read its output line by line while the block runs (see `SSHPool.stream`)."""
        async with self._stream(command, None, b"") as lines:
            yield lines

    @asynccontextmanager
    async def stream_script(self, body: str, *, shell: str = "/bin/sh") -> AsyncIterator[ProcessLines]:
        """Run ``body`` framed and read its output line by line (see `SSHPool.stream_script`)."""
        frame = ScriptFrame(shell=shell)
        async with self._stream(frame.command, frame, frame.script(body).encode()) as lines:
            yield lines

    async def aclose(self) -> None:
        """Stop accepting commands; the master is the user's and stays. Idempotent."""
        self._closed = True

    async def __aenter__(self) -> OpenSSHTransport:
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
            f"<OpenSSHTransport {self._settings.host} via {self._control_path} "
            f"commands={self._in_use}/{self._max_channels}>"
        )

    # ------------------------------------------------------------------------------- internals
    def _argv(self, *tail: str) -> list[str]:
        # ControlMaster=no: never become a master ourselves; BatchMode: never prompt on our behalf. When
        # the master's socket does not answer, ssh would log in on its own: a ProxyCommand (used only
        # then) that connects nowhere stops that, before anything could have run.
        options = ["-S", self._control_path, "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"]
        options += ["-o", "ProxyCommand=false"]
        return [*_ssh_argv(self._settings), *options, self._settings.host, *tail]

    def _require_open(self) -> None:
        if self._closed:
            raise SessionClosedError("the OpenSSH transport is closed; open a new session")

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[None]:
        self._require_open()
        async with self._slots:
            self._require_open()
            self._in_use += 1
            self._peak = max(self._peak, self._in_use)
            try:
                yield
            finally:
                self._in_use -= 1

    async def _run_ssh(
        self,
        command: str,
        stdin: bytes,
        timeout: float | None,  # noqa: ASYNC109 - names the command
    ) -> tuple[int, str, str]:
        process = await anyio.open_process(self._argv(command))
        try:
            with anyio.move_on_after(timeout) as scope:
                stdout, stderr = await communicate(process, stdin)
                status = await process.wait()
            if scope.cancelled_caught:
                raise TimeoutError(
                    f"{command!r} did not finish within {timeout:g} s on {self._settings.host}; its ssh "
                    "process was ended"
                )
        finally:
            await end_process(process)
        return status, stdout.decode(errors="replace"), stderr.decode(errors="replace")

    async def _master_alive(self) -> tuple[bool, str]:
        checked = await anyio.run_process(self._argv_check(), check=False, stdin=subprocess.DEVNULL)
        return checked.returncode == 0, checked.stderr.decode(errors="replace").strip()

    def _argv_check(self) -> list[str]:
        return [*_ssh_argv(self._settings), "-S", self._control_path, "-O", "check", self._settings.host]

    def _master_gone(self, why: str) -> ConnectError:
        host = self._settings.host
        return ConnectError(
            f"the OpenSSH ControlMaster for {host} is not running (its socket {self._control_path}: "
            f"{why or 'no answer'}), so nothing can reach the login node. Run `ssh {host}` in a terminal "
            "to log in again (with ControlMaster auto and ControlPersist in your ssh config the master "
            "stays after you log out), then start the session again.",
            host=host,
        )

    @asynccontextmanager
    async def _stream(
        self, command: str, frame: ScriptFrame | None, stdin: bytes
    ) -> AsyncIterator[ProcessLines]:
        async with self._channel():
            # Standard error is discarded, as SSHPool.stream does: nobody drains it.
            process = await anyio.open_process(self._argv(command), stderr=subprocess.DEVNULL)
            try:
                assert process.stdin is not None
                if stdin:
                    await process.stdin.send(stdin)
                await process.stdin.aclose()
                yield ProcessLines(process, command, self._settings.host, frame)
            finally:
                await end_process(process)


def _never_reached_master(stderr: str) -> bool:
    """Whether ssh failed before handing the command to the master (so the command never ran).

    Then ssh went on to a connection of its own through ``ProxyCommand=false``, which closes before the
    key exchange: only a new connection prints ``kex_exchange_identification``, never a session of a
    master; ssh's own name for a proxied peer is ``UNKNOWN port 65535``.
    """
    return "kex_exchange_identification" in stderr or "UNKNOWN port 65535" in stderr
