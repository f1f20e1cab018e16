"""The argument table of a job array: its layout, shared with the client, and how a task reads its entry.

With ``runner.py run ... --packed``, ARGS_PATH is an argument table holding the calls of a whole job
array, and the task runs entry ``$SLURM_ARRAY_TASK_ID``. The table is, all integers unsigned
little-endian::

    header   magic b"SBARGS", format version (2 bytes, 1), entry count (8 bytes)
    slots    one per entry: offset from the start of the file (8 bytes), length (8 bytes)
    entries  the call files, back to back

A task reads the header, its own slot and its own entry, whatever the size of the table.
"""

from __future__ import annotations

import os
import struct

from .failures import LoadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

ARGUMENT_TABLE_MAGIC = b"SBARGS"
ARGUMENT_TABLE_VERSION = 1
ARGUMENT_TABLE_HEADER = struct.Struct("<6sHQ")  # magic, format version, entry count
ARGUMENT_TABLE_SLOT = struct.Struct("<QQ")  # offset of the entry from the start of the file, its length


def read_table_entry(file: IO[bytes], path: str, task: str) -> tuple[int, bytes]:
    """Return the index ``task`` (a decimal string) and its entry of the argument table open as ``file``.

    Reads the header, one slot and one entry, nothing else. ``path`` is for messages. Raises
    :class:`LoadError` saying what is wrong with the table or the task id.
    """
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    count = _table_count(file.read(ARGUMENT_TABLE_HEADER.size), size, path)
    index = _table_index(task, count, path)
    file.seek(ARGUMENT_TABLE_HEADER.size + index * ARGUMENT_TABLE_SLOT.size)
    offset, length = ARGUMENT_TABLE_SLOT.unpack(file.read(ARGUMENT_TABLE_SLOT.size))
    entries_start = ARGUMENT_TABLE_HEADER.size + count * ARGUMENT_TABLE_SLOT.size
    if offset < entries_start or offset + length > size:
        raise LoadError(
            f"The packed arguments file {path} is damaged: entry {index} is said to span bytes {offset} to "
            f"{offset + length}, outside the entries (bytes {entries_start} to {size})."
        )
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:  # the file shrank since its size was taken
        raise LoadError(f"The packed arguments file {path} is damaged: entry {index} is cut short.")
    return index, data


def _table_count(header: bytes, size: int, path: str) -> int:
    """The entry count in the table ``header``, checked against the file's ``size``."""
    if len(header) < ARGUMENT_TABLE_HEADER.size or not header.startswith(ARGUMENT_TABLE_MAGIC):
        raise LoadError(
            f"The arguments file {path} is not a packed argument table (it lacks the table header), "
            "so it is damaged, or it holds a single call and the job should not have been given --packed."
        )
    _, version, count = ARGUMENT_TABLE_HEADER.unpack(header)
    if version != ARGUMENT_TABLE_VERSION:
        raise LoadError(
            f"The packed arguments file {path} has table format {version}, but this runner reads only "
            f"format {ARGUMENT_TABLE_VERSION}."
        )
    if ARGUMENT_TABLE_HEADER.size + count * ARGUMENT_TABLE_SLOT.size > size:
        raise LoadError(
            f"The packed arguments file {path} is damaged: its header announces {count} entries, "
            f"but the file ({size} bytes) is too short to hold their table."
        )
    return int(count)


def _table_index(task: str, count: int, path: str) -> int:
    """This task's entry in a table of ``count`` entries: ``task``, the array task id, checked."""
    if not task:
        raise LoadError(
            f"The arguments file {path} packs the calls of a job array, but SLURM_ARRAY_TASK_ID is not "
            "set, so the job cannot tell which call is its own. Only tasks of an `sbatch --array` job "
            "can run it."
        )
    try:
        index = int(task)
    except ValueError:
        index = -1
    if not 0 <= index < count:
        held = f"calls for tasks 0 to {count - 1} only" if count else "no calls"
        raise LoadError(
            f"This is array task {task}, but the packed arguments file {path} holds {held}. The job was "
            "submitted with an --array range that does not match its arguments file."
        )
    return index
