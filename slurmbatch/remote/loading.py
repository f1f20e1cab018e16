"""Loading the payload: the pickled function, its call's ``(args, kwargs)``, and the large arguments.

A call file may refer to large arguments uploaded once for many calls: its pickle holds the persistent
id ``("slurmbatch.blob", SHA256)`` in their place, and the runner loads ``SHA256.pkl`` from the function
file's directory (the content-addressed function directory) once per digest. It may also refer to the
values of other jobs (see ``upstream``), which are read from those jobs' files.

Every file is read by the standard unpickler; cloudpickle is imported only when a pickle refers to it
(see :mod:`slurmbatch.remote.environment`).
"""

from __future__ import annotations

import io
import os
import sys

from .failures import EnvironmentProblem, LoadError, describe
from .table import read_table_entry
from .upstream import is_upstream_reference, load_upstream

try:
    import _pickle as pickle  # see outcome.py: the C pickler without pickle.py's imports
except ImportError:
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from .environment import LazyCloudpickle

BLOB_REFERENCE = "slurmbatch.blob"
_HEX_DIGITS = frozenset("0123456789abcdef")


def load_function(path: str, cloudpickle: LazyCloudpickle) -> Any:
    """The function pickled in ``path``; raises :class:`LoadError` or :class:`EnvironmentProblem`."""
    return _load_file(path, "function", cloudpickle, None)


def load_arguments(
    path: str, blob_dir: str, cloudpickle: LazyCloudpickle, *, packed: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Load the ``(args, kwargs)`` in ``path``, or if ``packed`` in this array task's entry of it.

    The large arguments it refers to are loaded from ``blob_dir``. Raises :class:`LoadError` or
    :class:`EnvironmentProblem`.
    """
    if packed:
        index, data = _read_own_entry(path)
        source = f"entry {index} of the packed arguments file {path}"
    else:
        data, source = _read_file(path, "arguments"), f"the arguments file {path}"
    call = _unpickle(data, source, cloudpickle, _BlobDirectory(cloudpickle, blob_dir))
    if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)):
        raise LoadError(f"{source[0].upper()}{source[1:]} does not hold an (args, kwargs) pair.")
    return call[0], call[1]


def load_resume_call(path: str, cloudpickle: LazyCloudpickle) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The ``(callable, args, kwargs)`` a checkpoint saved in ``path``; raises :class:`LoadError`."""
    call = _load_file(path, "resume", cloudpickle, None)
    if not (isinstance(call, tuple) and len(call) == 3 and isinstance(call[2], dict)):
        raise LoadError(f"The resume file {path} does not hold a (callable, args, kwargs) call.")
    return call[0], tuple(call[1]), call[2]


def _load_file(path: str, what: str, cloudpickle: LazyCloudpickle, blobs: _BlobDirectory | None) -> Any:
    return _unpickle(_read_file(path, what), f"the {what} file {path}", cloudpickle, blobs)


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise LoadError(f"Could not read the {what} file {path}: {exc.strerror or exc}.") from exc


def _read_own_entry(path: str) -> tuple[int, bytes]:
    """Return this array task's index and its entry of the argument table ``path``."""
    try:
        with open(path, "rb") as file:
            return read_table_entry(file, path, os.environ.get("SLURM_ARRAY_TASK_ID", ""))
    except OSError as exc:
        raise LoadError(f"Could not read the arguments file {path}: {exc.strerror or exc}.") from exc


def _unpickle(data: bytes, source: str, cloudpickle: LazyCloudpickle, blobs: _BlobDirectory | None) -> Any:
    try:
        return _PayloadUnpickler(io.BytesIO(data), cloudpickle, blobs).load()
    except (LoadError, EnvironmentProblem):
        raise  # a large argument it refers to could not be loaded, or cloudpickle is unusable: said so
    except Exception as exc:
        if isinstance(exc, ImportError):
            hint = (
                f"A module it refers to is not importable by {sys.executable} on the cluster; install it "
                "there, or make it importable (PYTHONPATH, `setup` lines, conda_env)."
            )
        else:
            hint = "The file may be damaged or was pickled by an incompatible client."
        raise LoadError(f"Could not unpickle {source} ({len(data)} bytes): {describe(exc)}. {hint}") from exc


class _PayloadUnpickler(pickle.Unpickler):
    """Unpickles a payload file: cloudpickle is checked when first referred to, large arguments put in place."""

    def __init__(self, file: IO[bytes], cloudpickle: LazyCloudpickle, blobs: _BlobDirectory | None) -> None:
        super().__init__(file)
        self._cloudpickle = cloudpickle
        self._blobs = blobs

    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle" or module.startswith("cloudpickle."):
            self._cloudpickle.module()  # raises EnvironmentProblem if cloudpickle is missing or too old
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._blobs is None:
            raise pickle.UnpicklingError(
                f"it holds the reference {pid!r}, but only a call file refers to others"
            )
        return self._blobs.load(pid)


class _BlobDirectory:
    """The large arguments a call refers to, loaded from ``directory`` once per digest."""

    def __init__(self, cloudpickle: LazyCloudpickle, directory: str) -> None:
        self._cloudpickle = cloudpickle
        self._directory = directory
        # One object per digest: arguments that were the same object on the client stay one object here.
        self._loaded: dict[str, Any] = {}

    def load(self, pid: Any) -> Any:
        if is_upstream_reference(pid):
            # Another job's value, read from its files here on the cluster (see upstream.py).
            return load_upstream(pid, self._unpickle_upstream)
        digest = _blob_digest(pid)
        if digest not in self._loaded:
            path = os.path.join(self._directory, f"{digest}.pkl")
            self._loaded[digest] = _load_file(path, "large-argument", self._cloudpickle, None)
        return self._loaded[digest]

    def _unpickle_upstream(self, data: bytes, source: str) -> Any:
        return _unpickle(data, source, self._cloudpickle, None)


def _blob_digest(pid: Any) -> str:
    # The digest becomes a file name: anything but 64 hex digits could point outside the directory.
    if (
        isinstance(pid, tuple)
        and len(pid) == 2
        and pid[0] == BLOB_REFERENCE
        and isinstance(pid[1], str)
        and len(pid[1]) == 64
        and _HEX_DIGITS.issuperset(pid[1])
    ):
        return pid[1]
    raise pickle.UnpicklingError(f"it holds the reference {pid!r}, which is not to a large argument")
