"""The outcome of one remote command."""

from __future__ import annotations

import attrs

__all__ = ["CommandResult"]


@attrs.frozen(kw_only=True)
class CommandResult:
    """What a remote command printed and how it exited.

    A non-zero exit status is not an error of the transport: callers decide what it means.

    Attributes:
        command: The command line as sent to the remote shell.
        exit_status: The command's exit status, or the negative signal number if a signal ended it
            (as in `subprocess.CompletedProcess.returncode`).
        stdout: Standard output, decoded as UTF-8 (undecodable bytes become U+FFFD).
        stderr: Standard error, decoded the same way.
        exit_signal: The name of the signal that ended the command (``"TERM"``, ``"KILL"``), if any.
    """

    command: str
    exit_status: int
    stdout: str
    stderr: str
    exit_signal: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_status == 0
