"""Running one command on one channel (on the asyncio side of the bridge).

If the operation is cancelled or fails while the command runs, the command is sent SIGTERM and the
channel closed at once, without waiting for the server to confirm (see `_channel.stop_process` for when
sshd cannot deliver the signal).
"""

from __future__ import annotations

import asyncssh

from slurmbatch._errors import ConnectionLost

from ._channel import start_process, stop_process
from ._connect import Target
from .result import CommandResult

__all__ = ["run_command"]


async def run_command(
    connection: asyncssh.SSHClientConnection, command: str, stdin: bytes | None, *, target: Target
) -> CommandResult:
    """Run ``command`` on a new channel of ``connection`` and wait until it has exited.

    ``stdin`` is fed to the command and then closed; ``None`` gives it an empty standard input.

    Raises:
        ChannelNotOpened: the channel could not be opened, so nothing ran.
        ConnectError: the connection was lost while the command ran.
    """
    process = await start_process(connection, command, stdin)
    try:
        completed = await process.wait(check=False)
    except BaseException:
        stop_process(process)
        raise
    if completed.exit_status is None and completed.exit_signal is None:
        raise ConnectionLost(
            f"the connection to {target.address} was lost while {command!r} was running; it may have run partly or "
            "fully, so check its effects before running it again.",
            host=target.alias,
        )
    return CommandResult(
        command=command,
        exit_status=completed.returncode if completed.returncode is not None else -1,
        stdout=_decode(completed.stdout),
        stderr=_decode(completed.stderr),
        exit_signal=completed.exit_signal[0] if completed.exit_signal else None,
    )


def _decode(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return "" if data is None else str(data)
