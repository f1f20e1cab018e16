"""Values of upstream jobs: a call whose arguments held another job's future gets that job's value here.

The client pickles such a future as the persistent id ``("slurmbatch.upstream", JOB_ID, RESULT_PATH,
VALUE_PATH)``: the upstream job wrote its outcome to RESULT_PATH, and a large return value apart, to
VALUE_PATH (its outcome then names that file in ``value_file``). The value is read from the cluster's
file system, never from the client; Slurm started this job only after the upstream one succeeded
(``--dependency=afterok``), so its files are there.
"""

from __future__ import annotations

from .failures import LoadError

try:
    import _pickle as pickle  # see outcome.py: the C pickler without pickle.py's imports
except ImportError:
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

UPSTREAM_REFERENCE = "slurmbatch.upstream"
#: A return value whose pickle is at least this large goes to a file of its own, next to the outcome.
VALUE_FILE_THRESHOLD = 64 * 1024


def is_upstream_reference(pid: Any) -> bool:
    """Whether ``pid`` is a reference to an upstream job's value (see the module docstring)."""
    return (
        isinstance(pid, tuple)
        and len(pid) == 4
        and pid[0] == UPSTREAM_REFERENCE
        and all(isinstance(part, str) for part in pid[1:])
    )


def load_upstream(pid: tuple[str, str, str, str], unpickle: Callable[[bytes, str], Any]) -> Any:
    """The value the upstream job named by ``pid`` returned; ``unpickle(data, source)`` loads a pickle.

    Raises :class:`LoadError` if the upstream job left no value (it failed, or its files were removed).
    """
    _, job_id, result_path, value_path = pid
    data = _read(value_path)
    if data is not None:
        return unpickle(data, f"the value file {value_path} of upstream job {job_id}")
    raw = _read(result_path)
    if raw is None:
        raise LoadError(
            f"Upstream job {job_id} left no result in {result_path} nor {value_path}: it did not finish, or "
            "its files were removed (release() or cleanup) before this job started."
        )
    try:
        outcome = pickle.loads(raw)
    except Exception as exc:
        raise LoadError(f"The result file {result_path} of upstream job {job_id} is damaged.") from exc
    if not isinstance(outcome, dict) or outcome.get("kind") != "value":
        said = outcome.get("message", "") if isinstance(outcome, dict) else ""
        raise LoadError(f"Upstream job {job_id} did not return a value: {said or 'it failed'}.")
    if outcome.get("value_file"):
        raise LoadError(f"The value file {outcome['value_file']} of upstream job {job_id} is missing.")
    value = outcome.get("value")
    return None if value is None else unpickle(value, f"the result of upstream job {job_id}")


def split_value(result: dict[str, Any], value_file: str | None, write: Callable[[str, bytes], None]) -> None:
    """Move a large return value out of the outcome ``result`` into ``value_file`` (if one is given).

    The outcome stays small: the client reads it at once, and reads the value only when it wants it.
    """
    value = result.get("value")
    if value_file and result["kind"] == "value" and value is not None and len(value) >= VALUE_FILE_THRESHOLD:
        write(value_file, value)
        result["value"] = None
        result["value_file"] = value_file
        result["value_size"] = len(value)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoadError(f"Could not read {path}: {exc.strerror or exc}.") from exc
