"""The outcome file: what the job reports to the client, as a standard-library pickle of primitives.

The outcome is a dict of ``format``, ``kind`` ("value", "exception" or "environment"), ``value``,
``exception``, ``exc_type``, ``message``, ``traceback``, ``python``, ``cloudpickle`` (the version the
job used, "" if it did not need it), ``host``, ``rank``, ``job_id`` and ``task``, so the client can read
it even when it cannot rebuild the returned value or the raised exception.
"""

from __future__ import annotations

import os

from .environment import PYTHON_VERSION
from .failures import EnvironmentProblem, safe_str

try:
    # The C pickler on its own: pickle.py imports re, enum and more, a few milliseconds of every task.
    import _pickle as pickle
except ImportError:  # an interpreter without the C accelerator
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    from .environment import LazyCloudpickle

OUTCOME_FORMAT = 1
OUTCOME_PROTOCOL = 4


def outcome(
    rank: int,
    cloudpickle: LazyCloudpickle | None,
    *,
    kind: str,
    value: bytes | None = None,
    exception: bytes | None = None,
    exc_type: str = "",
    message: str = "",
    traceback_text: str = "",
) -> dict[str, Any]:
    """The outcome of rank ``rank``: ``kind`` and what goes with it, and where and how it ran."""
    return {
        "format": OUTCOME_FORMAT,
        "kind": kind,
        "value": value,
        "exception": exception,
        "exc_type": exc_type,
        "message": message,
        "traceback": traceback_text,
        "python": PYTHON_VERSION,
        "cloudpickle": cloudpickle.version if cloudpickle is not None else "",
        "host": os.uname().nodename,  # what socket.gethostname() says, without importing socket
        "rank": rank,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "task": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
    }


def exception_outcome(
    rank: int, cloudpickle: LazyCloudpickle, exc: BaseException, *, skip_frames: int
) -> dict[str, Any]:
    """The outcome of a call that raised ``exc``; its traceback leaves out the first ``skip_frames``."""
    data: bytes | None = None
    # SystemExit and KeyboardInterrupt are reported but not shipped: re-raising them on the client
    # would end or interrupt the client program instead of reporting the job.
    if isinstance(exc, Exception):
        try:
            data = pickle_for_client(exc, cloudpickle)
        except Exception:
            data = None
    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None else None
    return outcome(
        rank,
        cloudpickle,
        kind="exception",
        exception=data,
        exc_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=safe_str(exc),
        traceback_text=format_traceback(exc, tb),
    )


def pickle_for_client(obj: object, cloudpickle: LazyCloudpickle) -> bytes:
    """Pickle a returned value or raised exception for the client, as cloudpickle would.

    If the payload needed cloudpickle, cloudpickle pickles ``obj``. If it did not, everything loaded so
    far came by reference, and the standard pickler writes what cloudpickle would for what it can pickle
    at all; cloudpickle is imported only for what it cannot (a lambda, a class made at run time).
    Raises :class:`EnvironmentProblem` if ``obj`` needs cloudpickle and this interpreter lacks it (its
    ``__cause__`` is the standard pickler's error).
    """
    if not cloudpickle.imported:
        try:
            return pickle.dumps(obj, protocol=-1)  # the highest protocol, as cloudpickle uses
        except Exception as exc:
            try:
                cloudpickle.module()
            except EnvironmentProblem as problem:
                raise problem from exc  # the cause says what the standard pickler could not pickle
    data: bytes = cloudpickle.module().dumps(obj)
    return data


def format_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    """The formatted traceback of ``exc`` from ``tb`` on, as Python prints it."""
    import traceback  # only when something failed: it is not needed on the way of a returned value

    return "".join(traceback.format_exception(type(exc), exc, tb))
