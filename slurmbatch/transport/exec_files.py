"""File operations over framed exec channels, for login nodes where SFTP cannot be used.

sshd starts an external SFTP server (``Subsystem sftp /usr/lib/openssh/sftp-server``, Debian's default)
through the user's login shell: a start-up file that prints to standard output then garbles the SFTP
protocol, and some sites turn the subsystem off altogether. `ExecFileSession` offers the methods of
`SFTPClient` with plain shell commands (``base64``, ``mv``, ``rm``) run by `SSHPool.script`, so the
login shell never parses them and its output never mixes with theirs.

Each call is one remote command; the ``*_many`` methods move all their files in that one command.
Contents travel base64-encoded (a third larger than over SFTP): this is a fallback, not the fast path.
"""

from __future__ import annotations

import base64
import binascii
import errno
import secrets
import shlex
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._protocol import Transport
    from .result import CommandResult

__all__ = ["ExecFileSession"]

_FILE = "@@sb-file"  # base64 never contains "@": the marker cannot occur inside a file's contents
_MISSING = "@@sb-missing"


class ExecFileSession:
    """The file operations of `SFTPClient`, each run as one framed command on the pool.

    Errors are the same built-in ones: `FileNotFoundError`, `PermissionError`, otherwise `OSError`,
    naming the remote path.
    """

    def __init__(self, pool: Transport) -> None:
        self._pool = pool

    async def put(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` to the remote file ``path``, creating it with ``mode`` or truncating it."""
        await self.put_many({path: data}, mode)

    async def put_many(self, files: Mapping[str, bytes], mode: int = 0o600) -> None:
        """Write several files in one command; see `put`."""
        if not files:
            return
        lines = [f"umask {0o777 & ~mode:03o}"]
        for path, data in files.items():
            quoted = shlex.quote(path)
            delimiter = f"SB_{secrets.token_hex(8)}"
            encoded = base64.encodebytes(data).decode("ascii")
            # A partial file is removed: a reader must never take it for the whole one.
            lines.append(
                f"base64 -d > {quoted} <<'{delimiter}' || {{ rm -f -- {quoted}; "
                f"echo 'cannot write '{quoted} >&2; exit 1; }}\n{encoded}{delimiter}"
            )
        await self._checked("\n".join(lines), "write", next(iter(files)))
        self._pool.transfers.bytes_written += sum(len(data) for data in files.values())

    async def get(self, path: str) -> bytes:
        """Return the contents of the remote file ``path``.

        Raises:
            FileNotFoundError: there is no such file.
        """
        data = (await self.get_many([path]))[path]
        if data is None:
            raise FileNotFoundError(errno.ENOENT, f"cannot read {path}: no such file", path)
        return data

    async def get_many(self, paths: Iterable[str], *, tail: int | None = None) -> dict[str, bytes | None]:
        """Return the contents of several files, read in one command; ``None`` for each missing file.

        ``tail``: only the last ``tail`` bytes of each file (``tail -c``, which seeks to them).
        """
        wanted = list(dict.fromkeys(paths))
        if not wanted:
            return {}
        lines = []
        for index, path in enumerate(wanted):
            quoted = shlex.quote(path)
            read = f"base64 < {quoted}" if tail is None else f"tail -c {int(tail)} < {quoted} | base64"
            lines.append(
                f"if [ -f {quoted} ] && [ -r {quoted} ]; then echo '{_FILE} {index}'; {read}; "
                f"else echo '{_MISSING} {index}'; fi"
            )
        result = await self._checked("\n".join(lines), "read", wanted[0])
        found: dict[str, bytes | None] = dict.fromkeys(wanted)
        current: int | None = None
        chunks: dict[int, list[str]] = {}
        for line in result.stdout.splitlines():
            if line.startswith(_FILE + " "):
                current = int(line.split()[1])
                chunks[current] = []
            elif line.startswith(_MISSING + " "):
                current = None
            elif current is not None:
                chunks[current].append(line)
        for index, lines_of_file in chunks.items():
            try:
                found[wanted[index]] = base64.b64decode("".join(lines_of_file), validate=True)
            except binascii.Error as error:
                raise OSError(errno.EIO, f"cannot read {wanted[index]}: garbled reply ({error})") from error
        self._pool.transfers.bytes_read += sum(len(data) for data in found.values() if data is not None)
        return found

    async def listdir(self, path: str) -> list[str]:
        """Return the sorted names in the remote directory ``path``, without ``.`` and ``..``."""
        result = await self._checked(f"cd -- {shlex.quote(path)} && ls -1A", "list", path)
        return sorted(name for name in result.stdout.split("\n") if name)

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a broken symbolic link does not)."""
        result = await self._checked(f"[ -e {shlex.quote(path)} ] && echo yes || echo no", "stat", path)
        return result.stdout.strip() == "yes"

    async def makedirs(self, path: str, mode: int = 0o700) -> None:
        """Create the directory ``path`` and any missing parents; an existing directory is fine."""
        await self._checked(f"umask {0o777 & ~mode:03o}; mkdir -p -- {shlex.quote(path)}", "create", path)

    async def realpath(self, path: str) -> str:
        """Return the absolute, normalized form of ``path`` (relative paths start at the login directory)."""
        result = await self._checked(f"cd -- {shlex.quote(path)} && pwd -P", "resolve", path)
        return result.stdout.strip()

    async def remove(self, path: str) -> None:
        """Remove the remote file ``path``."""
        quoted = shlex.quote(path)
        await self._checked(
            f"[ -e {quoted} ] || [ -L {quoted} ] || exit 2; rm -f -- {quoted}", "remove", path
        )

    async def remove_many(self, paths: Iterable[str]) -> None:
        """Remove several files in one command; a file that is already gone is no error."""
        names = list(dict.fromkeys(paths))
        if names:
            await self._checked("rm -f -- " + " ".join(shlex.quote(p) for p in names), "remove", names[0])

    async def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, atomically replacing ``dst`` if it exists (like `os.replace`)."""
        await self._checked(f"mv -f -- {shlex.quote(src)} {shlex.quote(dst)}", "rename", src)

    async def _checked(self, body: str, action: str, path: str) -> CommandResult:
        result = await self._pool.script(body, what=f"{action} {path} (over an exec channel)")
        if result.exit_status == 0:
            return result
        said = result.stderr.strip() or f"exit status {result.exit_status}"
        if result.exit_status == 2 or "No such file" in said:
            raise FileNotFoundError(errno.ENOENT, f"cannot {action} {path}: {said}", path)
        if "Permission denied" in said:
            raise PermissionError(errno.EACCES, f"cannot {action} {path}: {said}", path)
        if "No space left" in said or "quota" in said.lower():
            raise OSError(errno.ENOSPC, f"cannot {action} {path}: {said}", path)
        raise OSError(errno.EIO, f"cannot {action} {path}: {said}", path)
