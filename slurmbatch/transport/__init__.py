"""SSH transport: a bounded pool of asyncssh connections that runs under asyncio and trio.

`SSHPool` runs commands (`SSHPool.run`) and SFTP sessions (`SSHPool.sftp`) over at most
``max_connections`` connections with at most ``max_channels`` channels each, reconnecting when a
connection drops. `ConnectSettings` says where and how to connect.
"""

from .pool import SSHPool
from .result import CommandResult
from .settings import ConnectSettings
from .sftp import SFTPClient
from .stats import PoolStats

__all__ = ["CommandResult", "ConnectSettings", "PoolStats", "SFTPClient", "SSHPool"]
