"""The uploaded runner's code object: compiled by the first task, read back by the others.

Python compiles a script it runs every time (only imported modules get cached bytecode), and compiling
the runner costs a trivial task about as much as the rest of its start-up. So the uploaded file holds
the runner's text as a string and, through :func:`cached_code`, compiles it once per runner file and
Python version, keeping the code object (marshal) in a file next to the runner. The cache is checked
against the runner file's modification time and size, as Python checks its own ``.pyc`` files, and
anything unreadable in it is compiled afresh. Like ``.pyc`` files, it is not written under
``PYTHONDONTWRITEBYTECODE`` (or ``python -B``).
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType


def cached_code(source: str, first_line: int, script: str) -> CodeType:
    """The code of ``source``, the text that starts on line ``first_line`` of the file ``script``.

    Line numbers and the file name in its tracebacks are those of ``script``, so they show its lines.
    """
    script = os.path.abspath(script)
    directory, name = os.path.split(script)
    python = sys.implementation.cache_tag or sys.implementation.name
    cache = os.path.join(directory, f".{name}.{python}-{sys.hexversion:x}.code")
    try:
        info = os.stat(script)
        # What the cached code was compiled from: the script as it was then.
        stamp = info.st_mtime_ns.to_bytes(8, "little", signed=True) + info.st_size.to_bytes(8, "little")
    except OSError:
        stamp = b""
    if stamp:
        code = _read_cache(cache, stamp)
        if code is not None:
            return code
    code = compile("\n" * (first_line - 1) + source, script, "exec", dont_inherit=True)
    if stamp and not sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE or -B: as for .pyc files
        _write_cache(cache, stamp, marshal.dumps(code))
    return code


def _read_cache(path: str, stamp: bytes) -> CodeType | None:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    length = int.from_bytes(data[16:24], "little")
    if data[:16] != stamp or len(data) != 24 + length:  # another script's, or cut short
        return None
    try:
        code = marshal.loads(data[24:])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, type(cached_code.__code__)) else None


def _write_cache(path: str, stamp: bytes, data: bytes) -> None:
    # Tasks starting together may all write it: each writes its own file and renames it into place.
    temporary = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as file:
            file.write(stamp + len(data).to_bytes(8, "little") + data)
        os.replace(temporary, path)
    except OSError:  # a read-only or full directory: the next task compiles again
        try:
            os.unlink(temporary)
        except OSError:
            pass
