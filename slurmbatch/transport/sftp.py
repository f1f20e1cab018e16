"""File operations over one SFTP channel, usable from asyncio and trio.

`SFTPClient` is what `SSHPool.sftp` yields: one SFTP session on one channel of the pool, for a batch of
file operations. Each method is one bridged operation; the ``*_many`` methods keep up to
`MAX_FILES_IN_FLIGHT` files in flight at once in the one session, so a batch of up to that many files
takes about as long as a single file.

Limits:

* Whole files are held in memory; this is for small files (payloads, results, logs), not bulk data.
* `put` writes in place: a reader may see a partly written file. Write to a temporary name and
  `rename` for atomic replacement.
* ``mode`` is applied when a file or directory is created (subject to the server's umask), not to
  existing ones.

Errors are the built-in ones: `FileNotFoundError`, `PermissionError`, `FileExistsError`,
`NotADirectoryError`, `IsADirectoryError` and otherwise `OSError`, each naming the remote path;
`slurmbatch.ConnectError` if the connection is lost meanwhile.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import cast

import anyio
import asyncssh

from slurmbatch._errors import ConnectionLost

from ._bridge import AsyncioBridge
from ._connect import Target

__all__ = ["MAX_FILES_IN_FLIGHT", "SFTPClient", "TransferCounter"]

#: How many files the ``*_many`` methods transfer concurrently in one SFTP session. OpenSSH's
#: sftp-server holds a file descriptor per open file, within its process limit (often 1024).
MAX_FILES_IN_FLIGHT = 32


class TransferCounter:
    """Bytes a transport read from and wrote to remote files (file contents only, over SFTP or exec channels).

    One per pool: it tells what crossed the network for the session's files, e.g. that a value passed
    from job to job on the cluster never came to the client.
    """

    def __init__(self) -> None:
        self.bytes_read = 0
        self.bytes_written = 0


class SFTPClient:
    """File operations on the remote host, over one SFTP channel of an `SSHPool`.

    Obtain one with ``async with pool.sftp() as sftp:``; it is valid only inside that block. Methods may
    be called concurrently. Cancelling a call cancels its outstanding requests and returns once they are
    abandoned; files a cancelled `put_many` had already written stay written.
    """

    def __init__(
        self,
        bridge: AsyncioBridge,
        session: asyncssh.SFTPClient,
        target: Target,
        counter: TransferCounter | None = None,
    ) -> None:
        self._bridge = bridge
        self._remote = _RemoteFiles(session, target, counter or TransferCounter())

    async def put(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` to the remote file ``path``, creating it with ``mode`` or truncating it."""
        await self._bridge.call(self._remote.write, path, data, mode)

    async def put_many(self, files: Mapping[str, bytes], mode: int = 0o600) -> None:
        """Write several files concurrently; see `put`."""
        await self._bridge.call(self._remote.write_many, dict(files), mode)

    async def get(self, path: str) -> bytes:
        """Return the contents of the remote file ``path``.

        Raises:
            FileNotFoundError: there is no such file.
        """
        return await self._bridge.call(self._remote.read, path)

    async def get_many(self, paths: Iterable[str], *, tail: int | None = None) -> dict[str, bytes | None]:
        """Return the contents of several files, read concurrently; ``None`` for each missing file.

        ``tail``: only the last ``tail`` bytes of each file, read from that offset (a huge log costs no
        more than its end).
        """
        return await self._bridge.call(self._remote.read_many, list(dict.fromkeys(paths)), tail)

    async def listdir(self, path: str) -> list[str]:
        """Return the sorted names in the remote directory ``path``, without ``.`` and ``..``."""
        return await self._bridge.call(self._remote.listdir, path)

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a broken symbolic link does not)."""
        return await self._bridge.call(self._remote.exists, path)

    async def makedirs(self, path: str, mode: int = 0o700) -> None:
        """Create the directory ``path`` and any missing parents; an existing directory is fine."""
        await self._bridge.call(self._remote.makedirs, path, mode)

    async def realpath(self, path: str) -> str:
        """Return the absolute, normalized form of ``path`` (relative paths start at the login directory)."""
        return await self._bridge.call(self._remote.realpath, path)

    async def remove(self, path: str) -> None:
        """Remove the remote file ``path``."""
        await self._bridge.call(self._remote.remove, path)

    async def remove_many(self, paths: Iterable[str]) -> None:
        """Remove several files concurrently; a file that is already gone is no error."""
        await self._bridge.call(self._remote.remove_many, list(dict.fromkeys(paths)))

    async def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, atomically replacing ``dst`` if it exists (like `os.replace`)."""
        await self._bridge.call(self._remote.rename, src, dst)


class _RemoteFiles:
    """The operations as they run on the asyncio side, with asyncssh's errors translated."""

    def __init__(self, session: asyncssh.SFTPClient, target: Target, counter: TransferCounter) -> None:
        self._session = session
        self._target = target
        self._counter = counter

    async def write(self, path: str, data: bytes, mode: int) -> None:
        try:
            with self._translated("write", path):
                async with self._session.open(
                    path, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode), encoding=None
                ) as file:
                    await file.write(data)
                    self._counter.bytes_written += len(data)
        except OSError as error:
            if type(error) is OSError and error.errno in _STORAGE_ERRNOS:
                raise await self._storage_error(error, path) from error
            raise

    async def _storage_error(self, error: OSError, path: str) -> OSError:
        """Say why a write failed when the server did not: OpenSSH reports a full disk as plain "Failure"."""
        try:
            found = await self._session.statvfs(posixpath.dirname(path) or ".")
            free: int | None = found.bavail * found.frsize
        except (asyncssh.Error, OSError):
            free = None
        fix = (
            "Free space in the remote work directory (df -h and quota -s on the login node show it), "
            "or pass remote_workdir= a directory with room."
        )
        if error.errno == errno.EDQUOT:
            return OSError(errno.EDQUOT, f"cannot write {path}: your disk quota is exceeded. {fix}", path)
        if error.errno == errno.ENOSPC or free == 0:
            return OSError(
                errno.ENOSPC, f"cannot write {path}: no space left on the remote disk. {fix}", path
            )
        return OSError(
            error.errno,
            f"{error.strerror} (the server gave no reason; the usual one is an exceeded disk quota). {fix}",
            path,
        )

    async def write_many(self, files: dict[str, bytes], mode: int) -> None:
        limit = anyio.CapacityLimiter(MAX_FILES_IN_FLIGHT)

        async def write_one(path: str, data: bytes) -> None:
            async with limit:
                await self.write(path, data, mode)

        with _first_error():
            async with anyio.create_task_group() as group:
                for path, data in files.items():
                    group.start_soon(write_one, path, data)

    async def read(self, path: str, tail: int | None = None) -> bytes:
        with self._translated("read", path):
            async with self._session.open(path, "rb", encoding=None) as file:
                if tail is None:
                    data = await file.read()
                else:
                    size = (await file.stat()).size or 0
                    data = await file.read(min(tail, size), max(0, size - tail))
        self._counter.bytes_read += len(data)
        return cast(bytes, data)  # asyncssh types it as str, but encoding=None returns bytes

    async def read_many(self, paths: list[str], tail: int | None = None) -> dict[str, bytes | None]:
        limit = anyio.CapacityLimiter(MAX_FILES_IN_FLIGHT)
        found: dict[str, bytes | None] = dict.fromkeys(paths)

        async def read_one(path: str) -> None:
            async with limit:
                with suppress(FileNotFoundError):
                    found[path] = await self.read(path, tail)

        with _first_error():
            async with anyio.create_task_group() as group:
                for path in paths:
                    group.start_soon(read_one, path)
        return found

    async def listdir(self, path: str) -> list[str]:
        with self._translated("list", path):
            names = await self._session.listdir(path)
        return sorted(str(name) for name in names if name not in (".", ".."))

    async def exists(self, path: str) -> bool:
        with self._translated("look up", path):
            return await self._session.exists(path)

    async def makedirs(self, path: str, mode: int) -> None:
        with self._translated("create directory", path):
            await self._session.makedirs(path, asyncssh.SFTPAttrs(permissions=mode), exist_ok=True)

    async def realpath(self, path: str) -> str:
        with self._translated("resolve", path):
            return str(await self._session.realpath(path))

    async def remove(self, path: str) -> None:
        with self._translated("remove", path):
            await self._session.remove(path)

    async def remove_many(self, paths: list[str]) -> None:
        limit = anyio.CapacityLimiter(MAX_FILES_IN_FLIGHT)

        async def remove_one(path: str) -> None:
            async with limit:
                with suppress(FileNotFoundError):
                    await self.remove(path)

        with _first_error():
            async with anyio.create_task_group() as group:
                for path in paths:
                    group.start_soon(remove_one, path)

    async def rename(self, src: str, dst: str) -> None:
        with self._translated(f"rename to {dst}", src):
            try:
                await self._session.posix_rename(src, dst)
            except asyncssh.SFTPOpUnsupported:
                await self._session.rename(src, dst)

    @contextmanager
    def _translated(self, action: str, path: str) -> Iterator[None]:
        try:
            yield
        except (asyncssh.Error, ConnectionError) as error:
            if isinstance(error, asyncssh.SFTPError) and not _is_connection_loss(error):
                raise os_error(error, action, path) from error
            raise ConnectionLost(
                f"the connection to {self._target.address} was lost during SFTP {action} of {path}: {error}",
                host=self._target.alias,
                cause=error,
            ) from error


def os_error(error: asyncssh.SFTPError, action: str, path: str) -> OSError:
    """The built-in `OSError` subclass matching an SFTP status, naming what was done to which path."""
    kind, code = _OS_ERRORS.get(type(error), (OSError, errno.EIO))
    return kind(code, f"cannot {action} {path}: {error.reason or type(error).__name__}", path)


_OS_ERRORS: dict[type[asyncssh.SFTPError], tuple[type[OSError], int]] = {
    asyncssh.SFTPNoSuchFile: (FileNotFoundError, errno.ENOENT),
    asyncssh.SFTPNoSuchPath: (FileNotFoundError, errno.ENOENT),
    asyncssh.SFTPPermissionDenied: (PermissionError, errno.EACCES),
    asyncssh.SFTPWriteProtect: (PermissionError, errno.EROFS),
    asyncssh.SFTPFileAlreadyExists: (FileExistsError, errno.EEXIST),
    asyncssh.SFTPNotADirectory: (NotADirectoryError, errno.ENOTDIR),
    asyncssh.SFTPFileIsADirectory: (IsADirectoryError, errno.EISDIR),
    asyncssh.SFTPDirNotEmpty: (OSError, errno.ENOTEMPTY),
    asyncssh.SFTPNoSpaceOnFilesystem: (OSError, errno.ENOSPC),
    asyncssh.SFTPQuotaExceeded: (OSError, errno.EDQUOT),
}


@contextmanager
def _first_error() -> Iterator[None]:
    """Raise the first error of a failed batch itself rather than an exception group."""
    try:
        yield
    except Exception as group:  # anyio task groups raise an ExceptionGroup (a builtin from 3.11 on)
        first: BaseException = group
        while getattr(first, "exceptions", None):
            first = getattr(first, "exceptions")[0]  # noqa: B009
        raise first from None


# What a failed write reports when the disk is full: plain "Failure" from OpenSSH (EIO here), or the
# specific codes of servers that send them.
_STORAGE_ERRNOS = frozenset({errno.EIO, errno.ENOSPC, errno.EDQUOT})


def _is_connection_loss(error: asyncssh.SFTPError) -> bool:
    return isinstance(error, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection))
