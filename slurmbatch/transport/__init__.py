"""SSH transport: a bounded pool of asyncssh connections that runs under asyncio and trio.

`SSHPool` runs commands (`SSHPool.run`), SFTP sessions (`SSHPool.sftp`) and long-running commands read
line by line (`SSHPool.stream`) over at most ``max_connections`` connections with at most
``max_channels`` channels each, reconnecting when a connection drops. `OpenSSHTransport` does the same
through the user's own OpenSSH ControlMaster; `Transport` is what both offer. `ConnectSettings` says where and how to connect.
"""

from ._protocol import Lines, Transport
from .openssh import OpenSSHTransport
from .pool import SSHPool
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient
from .stats import PoolStats
from .stream import LineStream

__all__ = [
    "CommandResult",
    "ConnectSettings",
    "LineStream",
    "Lines",
    "OpenSSHTransport",
    "PoolStats",
    "SFTPClient",
    "SSHPool",
    "Transport",
]
