"""Where a batch of small remote files is read: one framed command for a few, one SFTP session for many.

A new SFTP session costs about six round trips before its first read (channel, subsystem, version,
limits) and each file about three more (open, read, close); one framed command costs about three in
all, its contents base64-encoded (a third larger). While results and outputs trickle in a few at a
time, that is the difference between 0.1 s and 0.5 s on a 50 ms link; a large batch, where bytes and
the login node's processes count more than round trips, goes over SFTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .transport import SFTPClient, Transport
from .transport.exec_files import ExecFileSession

__all__ = ["BY_COMMAND", "files_for"]

#: Batches of up to this many files are read by one command.
BY_COMMAND = 8


@asynccontextmanager
async def files_for(pool: Transport, count: int) -> AsyncIterator[SFTPClient | ExecFileSession]:
    """File operations for a batch of ``count`` files, valid inside the block."""
    if count <= BY_COMMAND:
        yield ExecFileSession(pool)
        return
    async with pool.sftp() as sftp:
        yield sftp
