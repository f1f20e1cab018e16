"""What the session needs of a transport: the seam between `SSHPool` and `OpenSSHTransport`.

Nothing above ``transport/`` knows which one runs: both run commands and framed scripts, stream a
script's output line by line, move files, bound how much runs at once, and raise the same errors.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .exec_files import ExecFileSession
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient, TransferCounter
from .stats import PoolStats


class Lines(Protocol):
    """A command's standard output, line by line (`LineStream` and its OpenSSH twin)."""

    @property
    def exit_status(self) -> int | None: ...

    @property
    def exit_signal(self) -> str | None: ...

    def __aiter__(self) -> Lines: ...

    async def __anext__(self) -> str: ...


class Transport(Protocol):
    """A bounded way to run commands on one login node (see `SSHPool` for each method's contract)."""

    startup_output: str
    sftp_unavailable: str | None
    #: Bytes of file contents read and written, over SFTP or exec channels.
    transfers: TransferCounter

    @property
    def settings(self) -> ConnectSettings: ...

    @property
    def capacity(self) -> int: ...

    @property
    def stats(self) -> PoolStats: ...

    async def run(
        self, command: str, *, input: str | bytes | None = None, timeout: float | None = None
    ) -> CommandResult: ...

    async def script(
        self,
        body: str,
        *,
        data: str | None = None,
        shell: str = "/bin/sh",
        what: str = "a remote command",
        timeout: float | None = None,
    ) -> CommandResult: ...

    def sftp(self) -> AbstractAsyncContextManager[SFTPClient | ExecFileSession]: ...

    def stream(self, command: str) -> AbstractAsyncContextManager[Lines]: ...

    def stream_script(self, body: str, *, shell: str = "/bin/sh") -> AbstractAsyncContextManager[Lines]: ...

    async def aclose(self) -> None: ...
