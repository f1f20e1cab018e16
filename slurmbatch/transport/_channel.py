"""Opening and stopping channels (asyncio side).

A channel that could not be opened ran nothing, so the pool may retry it: after a pause if the server
refused it (sshd answers "open failed" once MaxSessions channels are open, and frees a slot a little after
the client sees a channel close), or on another connection if this one has died. `ChannelNotOpened`
tells the two apart.

An open that is cancelled half-way is allowed to finish in the background and the channel is then
closed at once: abandoning it would leave a session slot taken on the server until the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncssh

__all__ = [
    "ChannelNotOpened",
    "SFTPUnavailable",
    "start_output_process",
    "start_process",
    "start_sftp",
    "stop_process",
]

T = TypeVar("T")


class ChannelNotOpened(Exception):
    """No channel could be opened, so nothing ran.

    ``refused`` is true when the connection is alive and the server declined the channel; otherwise the
    connection is unusable.
    """

    def __init__(self, *, refused: bool, cause: BaseException) -> None:
        why = "refused by the server" if refused else "connection unusable"
        super().__init__(f"channel not opened ({why}): {cause}")
        self.refused = refused
        self.cause = cause


async def start_process(
    connection: asyncssh.SSHClientConnection, command: str, stdin: bytes | None
) -> asyncssh.SSHClientProcess[bytes]:
    """Start ``command`` on a new channel, feeding it ``stdin`` (then end of file), or no input at all."""
    if stdin:
        opening = connection.create_process(command, input=stdin, encoding=None)
    else:
        opening = connection.create_process(command, stdin=asyncssh.DEVNULL, encoding=None)
    return await _open(connection, opening, stop_process)


async def start_output_process(
    connection: asyncssh.SSHClientConnection, command: str, stdin: bytes | None = None
) -> asyncssh.SSHClientProcess[bytes]:
    """Start ``command`` on a new channel for its standard output alone.

    It reads ``stdin`` and then end of file on standard input, and its standard error is discarded, so
    that output nobody reads cannot fill the channel's window and stall standard output.
    """
    if stdin:
        opening = connection.create_process(command, input=stdin, stderr=asyncssh.DEVNULL, encoding=None)
    else:
        opening = connection.create_process(
            command, stdin=asyncssh.DEVNULL, stderr=asyncssh.DEVNULL, encoding=None
        )
    return await _open(connection, opening, stop_process)


class SFTPUnavailable(Exception):
    """The server has no usable SFTP subsystem: ``garbled`` if it answered with something else."""

    def __init__(self, *, garbled: bool, cause: BaseException) -> None:
        super().__init__(f"SFTP unavailable ({'garbled' if garbled else 'no subsystem'}): {cause}")
        self.garbled = garbled
        self.cause = cause


async def start_sftp(connection: asyncssh.SSHClientConnection, timeout: float) -> asyncssh.SFTPClient:
    """Open an SFTP session on a new channel.

    Raises `SFTPUnavailable` when the server refuses the subsystem, or when what came back is not SFTP
    (a login shell's start-up file printing before the external sftp-server speaks), or nothing came back
    within ``timeout`` seconds.
    """
    try:
        return await _open(
            connection, asyncio.wait_for(connection.start_sftp_client(), timeout), asyncssh.SFTPClient.exit
        )
    except ChannelNotOpened as error:
        cause = error.cause
        if (
            isinstance(cause, asyncssh.ChannelOpenError)
            and cause.code == asyncssh.OPEN_REQUEST_SESSION_FAILED
        ):
            raise SFTPUnavailable(garbled=False, cause=cause) from cause
        raise
    except (asyncssh.SFTPError, asyncio.TimeoutError) as error:
        raise SFTPUnavailable(garbled=True, cause=error) from error


def stop_process(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Send the remote command SIGTERM and close its channel, without waiting for either.

    OpenSSH delivers the signal to the command's whole process group, but only for logins that run under
    privilege separation (not root logins) and only from OpenSSH 7.9 on; elsewhere the command runs on
    until it ends or writes to its closed output.
    """
    with contextlib.suppress(OSError, asyncssh.Error):
        if process.exit_status is None and process.exit_signal is None:
            process.send_signal("TERM")
    process.close()


async def _open(
    connection: asyncssh.SSHClientConnection, opening: Awaitable[T], discard: Callable[[T], None]
) -> T:
    task = asyncio.ensure_future(opening)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(functools.partial(_discard_opened, discard))
        raise
    except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, ConnectionError) as error:
        refused = isinstance(error, asyncssh.ChannelOpenError) and not connection.is_closed()
        raise ChannelNotOpened(refused=refused, cause=error) from error


def _discard_opened(discard: Callable[[T], None], task: asyncio.Future[T]) -> None:
    if not task.cancelled() and task.exception() is None:
        discard(task.result())
