"""Writing an outcome so that whoever sees it also sees the job's complete logs.

The client fetches a job's stdout and stderr once its result file appears. On a network file system a
reader on another host sees what reached the server, so the logs are flushed and fsynced before the
result is written, and the result goes to a temporary file (fsynced) that is then renamed into place:
readers see either no result file or the whole of it.
"""

from __future__ import annotations

import os
import sys


def sync_standard_streams() -> None:
    """Flush the job's stdout and stderr and make them durable (fsync), as far as they are files."""
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for stream in {id(stream): stream for stream in streams}.values():
        try:
            stream.flush()  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):  # closed, None, or replaced by something without flush
            pass
    # The job's logs are file descriptors 1 and 2 (the files Slurm opened), whatever sys.stdout is now.
    for fd in (1, 2):
        try:
            os.fsync(fd)
        except OSError:  # a pipe or a terminal (EINVAL), or closed: nothing to make durable
            pass


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file (mode 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    # The dot prefix keeps the temporary file out of the client's listing of results.
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; some network file systems refuse fsync on a directory
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
