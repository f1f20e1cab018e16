"""One connection opened step by step, to tell which step fails: for ``slurmbatch doctor``.

A session's pool opens connections in one go and reports the first failure as a `ConnectError`; a user
checking a new cluster wants to see each step on its own: the name resolves, the port answers, the host
key is known, the login succeeds (and how), and how many channels the server lets one connection hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence

import asyncssh
import attrs

from ._connect import explain, target_of
from ._options import Target
from ._route import Route, RouteError, load_route, open_route
from .settings import ConnectSettings

__all__ = ["ConnectionDiagnosis", "diagnose_connection", "keyscan_line"]

#: The most channels the MaxSessions probe opens: past this the server's limit does not matter to us.
MAX_PROBED_CHANNELS = 64


@attrs.frozen
class ConnectionDiagnosis:
    """What each step of opening one connection found. A step not reached is ``None``.

    Attributes:
        target: Where the ssh config sends the connection.
        jump: How the connection gets there when not directly (``"via jump host ..."``), else ``""``.
        addresses: The addresses the host name resolved to (empty when reached through a jump host).
        resolve_error: Why the name did not resolve.
        port_open: Whether a TCP connection to the port succeeded (``None``: not tried).
        port_error: Why it did not.
        host_key_known: Whether the host key was accepted (``None``: not reached).
        login_error: The plain-words error of the SSH handshake or login, if it failed.
        auth_method: The method that logged in (``publickey``, ``keyboard-interactive``, ...).
        max_sessions: Channels one connection could hold open before the server refused one (``None``:
            not probed; :data:`MAX_PROBED_CHANNELS` means "at least that many").
        connect_seconds: Seconds the SSH connection took, handshake and login included.
    """

    target: Target
    jump: str = ""
    addresses: tuple[str, ...] = ()
    resolve_error: str = ""
    port_open: bool | None = None
    port_error: str = ""
    host_key_known: bool | None = None
    login_error: str = ""
    auth_method: str = ""
    max_sessions: int | None = None
    connect_seconds: float | None = None

    @property
    def logged_in(self) -> bool:
        """Whether the login succeeded."""
        return bool(self.auth_method)


def keyscan_line(target: Target, known_hosts: str) -> str:
    """The command that adds the login node's host keys to ``known_hosts``; check them before trusting."""
    port = "" if target.port == 22 else f"-p {target.port} "
    return f"ssh-keyscan {port}{target.host} >> {known_hosts}"


async def diagnose_connection(
    settings: ConnectSettings, *, probe_channels: bool = True
) -> ConnectionDiagnosis:
    """Open one connection to ``settings.host`` step by step and report each step (asyncio only).

    Never raises for what the server or the network did: every failure is a field of the result. With
    ``probe_channels``, channels (each running ``cat``) are opened on the connection until the server
    refuses one, as its ``MaxSessions`` setting decides, and then all closed.
    """
    try:
        route = await load_route(settings)
    except (RouteError, OSError, ValueError, asyncssh.Error) as error:
        return ConnectionDiagnosis(target_of(settings, None), login_error=str(explain(settings, None, error)))
    target = target_of(settings, route)
    diagnosis = ConnectionDiagnosis(target, jump=route.via)
    if not route.jumps and not route.options.proxy_command:
        diagnosis = await _reach(diagnosis, target, settings.connect_timeout)
        if not diagnosis.port_open:
            return diagnosis
    return await _login(diagnosis, settings, route, probe_channels=probe_channels)


async def _reach(diagnosis: ConnectionDiagnosis, target: Target, timeout: float) -> ConnectionDiagnosis:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        return attrs.evolve(diagnosis, resolve_error=str(error))
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    diagnosis = attrs.evolve(diagnosis, addresses=addresses)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), timeout)
    except (OSError, asyncio.TimeoutError) as error:
        reason = str(error) or f"no answer within {timeout:g} s"
        return attrs.evolve(diagnosis, port_open=False, port_error=reason)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return attrs.evolve(diagnosis, port_open=True)


async def _login(
    diagnosis: ConnectionDiagnosis, settings: ConnectSettings, route: Route, *, probe_channels: bool
) -> ConnectionDiagnosis:
    started = time.monotonic()
    try:
        connection = await open_route(settings, route)
    except (OSError, asyncssh.Error, asyncio.TimeoutError, Exception) as error:
        host_key_rejected = isinstance(error, asyncssh.HostKeyNotVerifiable) or (
            "host key" in str(error).lower() and not isinstance(error, asyncssh.PermissionDenied)
        )
        return attrs.evolve(
            diagnosis,
            host_key_known=False if host_key_rejected else (None if _before_kex(error) else True),
            login_error=str(explain(settings, route, error)),
        )
    try:
        seconds = time.monotonic() - started
        method = _auth_method(connection)
        sessions = await _count_channels(connection) if probe_channels else None
    finally:
        connection.close()
        with contextlib.suppress(Exception):
            await connection.wait_closed()
    return attrs.evolve(
        diagnosis,
        host_key_known=True,
        auth_method=method,
        max_sessions=sessions,
        connect_seconds=seconds,
    )


def _before_kex(error: BaseException) -> bool:
    return isinstance(error, (OSError, asyncio.TimeoutError, asyncssh.ConnectionLost))


def _auth_method(connection: asyncssh.SSHClientConnection) -> str:
    # asyncssh has no public getter: the methods it still has to try start with the one being tried,
    # and once a login succeeded that is the one that did.
    methods = getattr(connection, "_auth_methods", None)
    method = methods[0] if isinstance(methods, list) and methods else None
    if isinstance(method, bytes) and method != b"none":
        return method.decode("ascii", "replace")
    return "an unknown method (the login succeeded)"


async def _count_channels(connection: asyncssh.SSHClientConnection) -> int:
    opened: list[asyncssh.SSHClientProcess[bytes]] = []
    try:
        while len(opened) < MAX_PROBED_CHANNELS:
            try:
                opened.append(await connection.create_process("cat", encoding=None))
            except asyncssh.ChannelOpenError:
                break
        return len(opened)
    finally:
        await _close_all(opened)


async def _close_all(processes: Sequence[asyncssh.SSHClientProcess[bytes]]) -> None:
    for process in processes:
        process.stdin.write_eof()
        process.close()
    for process in processes:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait_closed(), 5)
