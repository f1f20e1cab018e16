"""Run one pickled function call on a Slurm compute node and write its outcome to a file.

The batch script runs::

    PYTHON runner.py run FN_PATH ARGS_PATH RESULT_PATH [--expect-python 3.11] [--expect-cloudpickle 3]
                                                       [--rank-dir DIR] [--packed]
    PYTHON runner.py gather RESULT_PATH --rank-dir DIR --ntasks N

``run`` loads the function (FN_PATH) and its ``(args, kwargs)`` (ARGS_PATH), calls it, and writes the
outcome to RESULT_PATH. With ``--rank-dir`` every task of an ``srun`` step runs the function and writes
``DIR/rank-<SLURM_PROCID>.pkl`` instead; ``gather`` then picks the outcome that stands for the whole job
(the first failing rank, else rank 0) and writes RESULT_PATH, so that file is written exactly once.
A literal ``{task}`` in any path is replaced by ``$SLURM_ARRAY_TASK_ID``.

With ``--packed``, ARGS_PATH is an argument table holding the calls of a whole job array, and the task
runs entry ``$SLURM_ARRAY_TASK_ID``. The table is, all integers unsigned little-endian::

    header   magic b"SBARGS", format version (2 bytes, 1), entry count (8 bytes)
    slots    one per entry: offset from the start of the file (8 bytes), length (8 bytes)
    entries  the call files, back to back

A task reads the header, its own slot and its own entry, whatever the size of the table.

A call file may refer to large arguments uploaded once for many calls: its pickle holds the persistent
id ``("slurmbatch.blob", SHA256)`` in their place, and the runner loads ``SHA256.pkl`` from FN_PATH's
directory (the content-addressed function directory) once per digest.

The outcome file is a standard-library pickle of a dict of primitives (``format``, ``kind``, ``value``,
``exception``, ``exc_type``, ``message``, ``traceback``, ``python``, ``cloudpickle``, ``host``,
``rank``, ``job_id``, ``task``), so the client can read it even when it cannot rebuild the returned
value or the raised exception. It is written atomically (temporary file, fsync, rename) with mode 0600.

The function's own output goes to the job's stdout and stderr as usual. Exit status: 0 when the
function returned, 1 when it raised or could not be run.

This file is uploaded and run on its own: it uses only the standard library and cloudpickle, and runs
on Python 3.8 or newer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import platform
import re
import socket
import struct
import sys
import tempfile
import traceback
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import IO, Any

OUTCOME_FORMAT = 1
OUTCOME_PROTOCOL = 4
TASK_PLACEHOLDER = "{task}"

ARGUMENT_TABLE_MAGIC = b"SBARGS"
ARGUMENT_TABLE_VERSION = 1
ARGUMENT_TABLE_HEADER = struct.Struct("<6sHQ")  # magic, format version, entry count
ARGUMENT_TABLE_SLOT = struct.Struct("<QQ")  # offset of the entry from the start of the file, its length
BLOB_REFERENCE = "slurmbatch.blob"
_DIGEST = re.compile(r"[0-9a-f]{64}")


class _LoadError(Exception):
    """A payload file could not be read or unpickled; the message says which file and why."""


class _UsageError(Exception):
    """The command line cannot be carried out, and no outcome file can say so."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    options = _parser().parse_args(argv)
    try:
        if options.command == "run":
            return run(
                _with_task(options.fn_path),
                _with_task(options.args_path),
                _with_task(options.result_path),
                expect_python=options.expect_python,
                expect_cloudpickle=options.expect_cloudpickle,
                rank_dir=_with_task(options.rank_dir) if options.rank_dir else None,
                packed=options.packed,
            )
        return gather(_with_task(options.result_path), _with_task(options.rank_dir), int(options.ntasks))
    except _UsageError as error:
        print(f"slurmbatch runner: {error}", file=sys.stderr)
        return 2


def run(
    fn_path: str,
    args_path: str,
    result_path: str,
    *,
    expect_python: str | None = None,
    expect_cloudpickle: str | None = None,
    rank_dir: str | None = None,
    packed: bool = False,
) -> int:
    """Call the pickled function once and write its outcome; return 0 if it returned, else 1.

    With ``packed``, ``args_path`` is an argument table and the call is its entry ``$SLURM_ARRAY_TASK_ID``.
    """
    rank = int(os.environ.get("SLURM_PROCID") or 0)
    cloudpickle, import_error = _import_cloudpickle()
    problem = _environment_problem(expect_python, expect_cloudpickle, cloudpickle, import_error)
    if problem or cloudpickle is None:
        outcome = _outcome(rank, cloudpickle, kind="environment", message=problem)
    else:
        # Other ranks only report success: rank 0's value stands for the job.
        outcome = _call(
            cloudpickle, fn_path, args_path, rank, keep_value=rank_dir is None or rank == 0, packed=packed
        )
    destination = os.path.join(rank_dir, f"rank-{rank}.pkl") if rank_dir else result_path
    if rank_dir:
        # gather learns how many ranks to expect from the step itself, whatever srun options made it.
        outcome["ntasks"] = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
        # Ranks may start on several nodes at once; whoever comes first creates the directory.
        os.makedirs(rank_dir, mode=0o700, exist_ok=True)
    _flush_standard_streams()
    _write_atomically(destination, pickle.dumps(outcome, protocol=OUTCOME_PROTOCOL))
    return 0 if outcome["kind"] == "value" else 1


def gather(result_path: str, rank_dir: str, ntasks: int) -> int:
    """Merge the per-rank outcomes in ``rank_dir`` into ``result_path``; return 0 if all ranks returned.

    ``ntasks`` 0 means: as many ranks as the step had, as recorded by the ranks themselves.
    """
    if ntasks < 0:
        raise _UsageError(f"--ntasks must be 0 (as recorded by the ranks) or more, not {ntasks}.")
    if ntasks == 0:
        ntasks = _recorded_ntasks(rank_dir)
    outcomes: list[dict[str, Any]] = []
    missing: list[int] = []
    for rank in range(ntasks):
        path = os.path.join(rank_dir, f"rank-{rank}.pkl")
        try:
            with open(path, "rb") as file:
                outcome = pickle.load(file)
            if not isinstance(outcome, dict) or "kind" not in outcome:
                raise ValueError("it does not hold an outcome")
        except FileNotFoundError:
            missing.append(rank)
            continue
        except Exception as exc:
            message = f"Rank {rank} left a damaged outcome file {path}: {_describe(exc)}."
            outcome = _outcome(rank, None, kind="exception", exc_type="RuntimeError", message=message)
        outcomes.append(outcome)
    failed = [outcome for outcome in outcomes if outcome["kind"] != "value"]
    if failed:
        chosen = failed[0]
    elif missing:
        ranks = ", ".join(str(rank) for rank in missing)
        message = (
            f"Rank(s) {ranks} of {ntasks} wrote no outcome to {rank_dir}: they ended before the function "
            "returned or raised (killed, crashed, or never started). The job's stderr may say why."
        )
        chosen = _outcome(missing[0], None, kind="exception", exc_type="RuntimeError", message=message)
    else:
        chosen = outcomes[0]
    _flush_standard_streams()
    _write_atomically(result_path, pickle.dumps(chosen, protocol=OUTCOME_PROTOCOL))
    return 0 if chosen["kind"] == "value" else 1


def _recorded_ntasks(rank_dir: str) -> int:
    """The step's task count as the ranks recorded it (at least 1, so that a silent step is reported)."""
    recorded = 1
    try:
        names = os.listdir(rank_dir)
    except OSError:
        return recorded
    for name in names:
        if name.startswith("rank-") and name.endswith(".pkl"):
            try:
                with open(os.path.join(rank_dir, name), "rb") as file:
                    recorded = max(recorded, int(pickle.load(file).get("ntasks", 1)))
            except Exception:
                continue
    return recorded


def _call(
    cloudpickle: Any, fn_path: str, args_path: str, rank: int, *, keep_value: bool, packed: bool
) -> dict[str, Any]:
    try:
        fn = _load(cloudpickle, fn_path, "function")
        call_args = _load_arguments(cloudpickle, args_path, os.path.dirname(fn_path), packed=packed)
    except _LoadError as error:
        cause = error.__cause__
        details = _format_traceback(cause, cause.__traceback__) if cause is not None else ""
        return _outcome(rank, cloudpickle, kind="environment", message=str(error), traceback_text=details)
    args, kwargs = call_args
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        # Skip our own frame: the traceback should start at the user's function.
        return _exception_outcome(rank, cloudpickle, exc, skip_frames=1)
    if not keep_value:
        return _outcome(rank, cloudpickle, kind="value")
    try:
        data = cloudpickle.dumps(value)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        failure = pickle.PicklingError(
            f"The return value of {name} (a {_type_name(value)} object) could not be pickled: "
            f"{_describe(exc)}. Return plain data (numbers, strings, arrays, dataclasses) instead."
        )
        failure.__cause__ = exc
        return _exception_outcome(rank, cloudpickle, failure, skip_frames=0)
    return _outcome(rank, cloudpickle, kind="value", value=data)


def _load(cloudpickle: Any, path: str, what: str) -> Any:
    return _unpickle(_read_file(path, what), f"the {what} file {path}", cloudpickle.loads)


def _load_arguments(cloudpickle: Any, path: str, blob_dir: str, *, packed: bool) -> tuple[Any, Any]:
    """Load the ``(args, kwargs)`` in ``path``, or if ``packed`` in this array task's entry of it.

    The large arguments it refers to are loaded from ``blob_dir``.
    """
    if packed:
        index, data = _read_own_entry(path)
        source = f"entry {index} of the packed arguments file {path}"
    else:
        data, source = _read_file(path, "arguments"), f"the arguments file {path}"
    blobs = _BlobDirectory(cloudpickle, blob_dir)
    call = _unpickle(data, source, lambda call_file: _CallUnpickler(io.BytesIO(call_file), blobs).load())
    if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)):
        raise _LoadError(f"{source[0].upper()}{source[1:]} does not hold an (args, kwargs) pair.")
    return call[0], call[1]


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise _LoadError(f"Could not read the {what} file {path}: {exc.strerror or exc}.") from exc


def _unpickle(data: bytes, source: str, loads: Callable[[bytes], Any]) -> Any:
    try:
        return loads(data)
    except _LoadError:
        raise  # a large argument it refers to could not be loaded; that error names the file
    except Exception as exc:
        if isinstance(exc, ImportError):
            hint = (
                f"A module it refers to is not importable by {sys.executable} on the cluster; install it "
                "there, or make it importable (PYTHONPATH, `setup` lines, conda_env)."
            )
        else:
            hint = "The file may be damaged or was pickled by an incompatible client."
        raise _LoadError(
            f"Could not unpickle {source} ({len(data)} bytes): {_describe(exc)}. {hint}"
        ) from exc


class _BlobDirectory:
    """The large arguments a call refers to, loaded from ``directory`` once per digest."""

    def __init__(self, cloudpickle: Any, directory: str) -> None:
        self._cloudpickle = cloudpickle
        self._directory = directory
        # One object per digest: arguments that were the same object on the client stay one object here.
        self._loaded: dict[str, Any] = {}

    def load(self, pid: Any) -> Any:
        digest = _blob_digest(pid)
        if digest not in self._loaded:
            path = os.path.join(self._directory, f"{digest}.pkl")
            self._loaded[digest] = _load(self._cloudpickle, path, "large-argument")
        return self._loaded[digest]


class _CallUnpickler(pickle.Unpickler):
    """Unpickles a call file, putting each large argument it refers to in place of its reference."""

    def __init__(self, file: IO[bytes], blobs: _BlobDirectory) -> None:
        super().__init__(file)
        self._blobs = blobs

    def persistent_load(self, pid: Any) -> Any:
        return self._blobs.load(pid)


def _blob_digest(pid: Any) -> str:
    # The digest becomes a file name: anything but 64 hex digits could point outside the directory.
    if (
        isinstance(pid, tuple)
        and len(pid) == 2
        and pid[0] == BLOB_REFERENCE
        and isinstance(pid[1], str)
        and _DIGEST.fullmatch(pid[1])
    ):
        return pid[1]
    raise pickle.UnpicklingError(f"it holds the reference {pid!r}, which is not to a large argument")


def _read_own_entry(path: str) -> tuple[int, bytes]:
    """Return this array task's index and its entry of the argument table ``path``."""
    try:
        with open(path, "rb") as file:
            return read_table_entry(file, path, os.environ.get("SLURM_ARRAY_TASK_ID", ""))
    except OSError as exc:
        raise _LoadError(f"Could not read the arguments file {path}: {exc.strerror or exc}.") from exc


def read_table_entry(file: IO[bytes], path: str, task: str) -> tuple[int, bytes]:
    """Return the index ``task`` (a decimal string) and its entry of the argument table open as ``file``.

    Reads the header, one slot and one entry, nothing else. ``path`` is for messages.
    """
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    count = _table_count(file.read(ARGUMENT_TABLE_HEADER.size), size, path)
    index = _table_index(task, count, path)
    file.seek(ARGUMENT_TABLE_HEADER.size + index * ARGUMENT_TABLE_SLOT.size)
    offset, length = ARGUMENT_TABLE_SLOT.unpack(file.read(ARGUMENT_TABLE_SLOT.size))
    entries_start = ARGUMENT_TABLE_HEADER.size + count * ARGUMENT_TABLE_SLOT.size
    if offset < entries_start or offset + length > size:
        raise _LoadError(
            f"The packed arguments file {path} is damaged: entry {index} is said to span bytes {offset} to "
            f"{offset + length}, outside the entries (bytes {entries_start} to {size})."
        )
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:  # the file shrank since its size was taken
        raise _LoadError(f"The packed arguments file {path} is damaged: entry {index} is cut short.")
    return index, data


def _table_count(header: bytes, size: int, path: str) -> int:
    """The entry count in the table ``header``, checked against the file's ``size``."""
    if len(header) < ARGUMENT_TABLE_HEADER.size or not header.startswith(ARGUMENT_TABLE_MAGIC):
        raise _LoadError(
            f"The arguments file {path} is not a packed argument table (it lacks the table header), "
            "so it is damaged, or it holds a single call and the job should not have been given --packed."
        )
    _, version, count = ARGUMENT_TABLE_HEADER.unpack(header)
    if version != ARGUMENT_TABLE_VERSION:
        raise _LoadError(
            f"The packed arguments file {path} has table format {version}, but this runner reads only "
            f"format {ARGUMENT_TABLE_VERSION}."
        )
    if ARGUMENT_TABLE_HEADER.size + count * ARGUMENT_TABLE_SLOT.size > size:
        raise _LoadError(
            f"The packed arguments file {path} is damaged: its header announces {count} entries, "
            f"but the file ({size} bytes) is too short to hold their table."
        )
    return int(count)


def _table_index(task: str, count: int, path: str) -> int:
    """This task's entry in a table of ``count`` entries: ``task``, the array task id, checked."""
    if not task:
        raise _LoadError(
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
        raise _LoadError(
            f"This is array task {task}, but the packed arguments file {path} holds {held}. The job was "
            "submitted with an --array range that does not match its arguments file."
        )
    return index


def _exception_outcome(
    rank: int, cloudpickle: Any, exc: BaseException, *, skip_frames: int
) -> dict[str, Any]:
    data: bytes | None = None
    # SystemExit and KeyboardInterrupt are reported but not shipped: re-raising them on the client
    # would end or interrupt the client program instead of reporting the job.
    if isinstance(exc, Exception):
        try:
            data = cloudpickle.dumps(exc)
        except Exception:
            data = None
    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None else None
    return _outcome(
        rank,
        cloudpickle,
        kind="exception",
        exception=data,
        exc_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=_safe_str(exc),
        traceback_text=_format_traceback(exc, tb),
    )


def _outcome(
    rank: int,
    cloudpickle: ModuleType | None,
    *,
    kind: str,
    value: bytes | None = None,
    exception: bytes | None = None,
    exc_type: str = "",
    message: str = "",
    traceback_text: str = "",
) -> dict[str, Any]:
    return {
        "format": OUTCOME_FORMAT,
        "kind": kind,
        "value": value,
        "exception": exception,
        "exc_type": exc_type,
        "message": message,
        "traceback": traceback_text,
        "python": platform.python_version(),
        "cloudpickle": str(getattr(cloudpickle, "__version__", "")) if cloudpickle is not None else "",
        "host": socket.gethostname(),
        "rank": rank,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "task": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
    }


def _import_cloudpickle() -> tuple[ModuleType | None, ImportError | None]:
    try:
        import cloudpickle
    except ImportError as exc:
        return None, exc
    return cloudpickle, None


def _environment_problem(
    expect_python: str | None,
    expect_cloudpickle: str | None,
    cloudpickle: ModuleType | None,
    import_error: ImportError | None,
) -> str:
    """Describe why this interpreter cannot load the payload, or return ``""`` if it can."""
    executable = sys.executable or "python3"
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if expect_python and ".".join(expect_python.split(".")[:2]) != running:
        return (
            f"The job runs Python {platform.python_version()} ({executable}), but the function was pickled "
            f"by Python {expect_python} on the client; pickled functions only load under the same Python "
            f"minor version. Point `python=` at a Python {expect_python} interpreter on the cluster, or run "
            f"the client under Python {running}."
        )
    wanted = expect_cloudpickle.split(".")[0] if expect_cloudpickle else ""
    if wanted.isdigit():
        install = f"cloudpickle {wanted}.x"
        pip = f"{executable} -m pip install --user 'cloudpickle>={wanted},<{int(wanted) + 1}'"
    else:
        install, pip = "cloudpickle", f"{executable} -m pip install --user cloudpickle"
    advice = f"Install {install} for {executable} on the cluster, e.g. `{pip}`, or point `python=` at an "
    advice += "interpreter that has it."
    if cloudpickle is None:
        detail = (
            "" if isinstance(import_error, ModuleNotFoundError) else f" (importing it failed: {import_error})"
        )
        used = f" (the client uses cloudpickle {wanted})" if wanted else ""
        return (
            f"cloudpickle is not installed for {executable} (Python {platform.python_version()}) on the "
            f"cluster{detail}; the job needs it to load the function{used}. {advice}"
        )
    found = str(getattr(cloudpickle, "__version__", "unknown"))
    if wanted and found.split(".")[0] != wanted:
        return (
            f"The job has cloudpickle {found} for {executable}, but the client pickled the function with "
            f"cloudpickle {wanted}; both sides need the same cloudpickle major version. {advice}"
        )
    return ""


def _write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file (mode 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    # mkstemp creates the file with mode 0600 whatever the umask; the dot prefix keeps it out of globs.
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    try:  # make the rename itself durable; some network file systems refuse fsync on a directory
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _with_task(path: str) -> str:
    if TASK_PLACEHOLDER not in path:
        return path
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not task:
        raise _UsageError(f"The path {path} contains {TASK_PLACEHOLDER}, but SLURM_ARRAY_TASK_ID is not set.")
    return path.replace(TASK_PLACEHOLDER, task)


def _flush_standard_streams() -> None:
    # The client fetches the logs once the result appears, so they must be complete by then.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _format_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<str() of the {type(exc).__name__} failed>"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner.py", description="Run one pickled call of a Slurm job.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_command = commands.add_parser("run", help="call the function and write its outcome")
    run_command.add_argument("fn_path")
    run_command.add_argument("args_path")
    run_command.add_argument("result_path")
    run_command.add_argument("--expect-python", help="the client's Python major.minor, e.g. 3.11")
    run_command.add_argument("--expect-cloudpickle", help="the client's cloudpickle major version, e.g. 3")
    run_command.add_argument("--rank-dir", help="write DIR/rank-$SLURM_PROCID.pkl instead of RESULT_PATH")
    run_command.add_argument(
        "--packed", action="store_true", help="ARGS_PATH is an argument table: run entry $SLURM_ARRAY_TASK_ID"
    )
    gather_command = commands.add_parser("gather", help="merge the per-rank outcomes into RESULT_PATH")
    gather_command.add_argument("result_path")
    gather_command.add_argument("--rank-dir", required=True)
    gather_command.add_argument("--ntasks", type=int, default=0, help="ranks to expect (0: as recorded)")
    return parser


if __name__ == "__main__":
    # Python puts this file's directory (the remote workdir) first on sys.path; its fn/, jobs/ and
    # results/ directories must not shadow the user's packages of the same name.
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
