"""Pickling functions and arguments for the job side, and reading the outcome the runner writes back.

Functions and arguments are pickled with cloudpickle, so functions defined in ``__main__``, lambdas and
closures travel by value; functions of importable modules travel by reference and their module must be
importable on the cluster too. The outcome file (see :mod:`slurmbatch.remote.runner`) is a
standard-library pickle of primitives, so it can be read even when its value or exception cannot.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import io
import pickle
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cloudpickle

from ._errors import PayloadError, RemoteEnvironmentError, RemoteError
from ._tracebacks import restore_source_lines

__all__ = [
    "FunctionBlob",
    "pack_arguments",
    "pack_function",
    "runner_digest",
    "runner_source",
    "unpack_outcome",
]

_OUTCOME_KINDS = frozenset({"value", "exception", "environment"})
_OUTCOME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "value": (bytes, type(None)),
    "exception": (bytes, type(None)),
    "exc_type": str,
    "message": str,
    "traceback": str,
    "host": str,
}
_REMOTE_TRACEBACK = "remote_traceback"


@attrs.frozen
class FunctionBlob:
    """A function pickled for the job side.

    ``data`` is the cloudpickle of the function, ``digest`` its sha256 in hex (the remote file is
    ``fn/<digest>.pkl``, so each function is uploaded once), and ``name`` the function's qualified name,
    for messages.
    """

    data: bytes = attrs.field(repr=False)
    digest: str
    name: str
    source_file: str | None = None


def pack_function(fn: Callable[..., Any]) -> FunctionBlob:
    """Pickle ``fn`` for the job side.

    Raises :class:`PayloadError` naming the function and the object it refers to that cannot be
    pickled (a lock, a socket, an open file...), with what to do about it.
    """
    name = _callable_name(fn)
    try:
        data = cloudpickle.dumps(fn)
    except Exception as exc:
        culprit = _find_unpicklable(_referenced_objects(fn))
        if culprit is None:
            raise PayloadError(
                f"Cannot send the function {name} to the job: it cannot be pickled ({_describe(exc)}). "
                "Define it at module level or in __main__, and create unpicklable objects inside it."
            ) from exc
        label, obj, cause = culprit
        raise PayloadError(
            f"Cannot send the function {name} to the job: it refers to {label}, a {_type_name(obj)} object, "
            f"which cannot be pickled ({_describe(cause)}). Create that object inside the function, or pass "
            "the data it needs as arguments."
        ) from exc
    code = getattr(fn, "__code__", None)
    source = code.co_filename if code is not None and not code.co_filename.startswith("<") else None
    return FunctionBlob(data=data, digest=hashlib.sha256(data).hexdigest(), name=name, source_file=source)


def pack_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    """Pickle one call's ``(args, kwargs)`` for the job side.

    Raises :class:`PayloadError` naming the argument (``args[i]`` or the keyword) that cannot be pickled.
    """
    call = (tuple(args), dict(kwargs))
    try:
        return bytes(cloudpickle.dumps(call))
    except Exception as exc:
        labelled = [(f"args[{i}]", arg) for i, arg in enumerate(call[0])]
        labelled += [(f"keyword argument {key!r}", value) for key, value in call[1].items()]
        culprit = _find_unpicklable(labelled)
        label, obj, cause = culprit if culprit is not None else ("the arguments", call, exc)
        raise PayloadError(
            f"Cannot send {label} (a {_type_name(obj)} object) to the job: it cannot be pickled "
            f"({_describe(cause)}). Pass the data it holds instead, and create such objects inside the function."
        ) from exc


def unpack_outcome(data: bytes, *, job_id: str, source_file: str | None = None) -> Any:
    """Return the value in the outcome file ``data`` of job ``job_id``, or raise what the job raised.

    The remote exception is re-raised as its own type, with its traceback in ``remote_traceback`` and
    (Python 3.11+) in a note. Raises :class:`RemoteError` if that exception cannot be rebuilt here,
    :class:`RemoteEnvironmentError` if the job side could not run the function, and
    :class:`PayloadError` if the file is damaged or the value cannot be unpickled here. ``source_file``,
    the file that defined the submitted function, restores source lines in the remote traceback.
    """
    outcome = _read_outcome(data, job_id=job_id)
    outcome["traceback"] = restore_source_lines(outcome["traceback"], source_file)
    host = outcome["host"] or "an unknown node"
    if outcome["kind"] == "environment":
        raise RemoteEnvironmentError(
            f"Job {job_id} could not run the function on {host}: {outcome['message']}"
        )
    if outcome["kind"] == "value":
        if outcome["value"] is None:
            return None
        try:
            return cloudpickle.loads(outcome["value"])
        except Exception as exc:
            raise PayloadError(
                f"The return value of job {job_id} cannot be unpickled here ({_describe(exc)}). Make the "
                "modules and classes it uses importable on the client, or return plain data."
            ) from exc
    raise _remote_exception(outcome, job_id=job_id, host=host)


@functools.cache
def runner_source() -> bytes:
    """Return the bytes of the job-side program, :mod:`slurmbatch.remote.runner`."""
    return importlib.resources.files("slurmbatch.remote").joinpath("runner.py").read_bytes()


@functools.cache
def runner_digest() -> str:
    """Return the sha256 (hex) of :func:`runner_source`; the remote file is ``runner-<digest[:12]>.py``."""
    return hashlib.sha256(runner_source()).hexdigest()


class _OutcomeUnpickler(pickle.Unpickler):
    # The outcome is primitives only: refusing every global keeps a damaged or foreign file inert.
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which an outcome never does")


def _read_outcome(data: bytes, *, job_id: str) -> dict[str, Any]:
    damaged = (
        f"The result file of job {job_id} is damaged ({{why}}). The job is not rerun automatically; "
        "resubmit it if its work can safely be repeated."
    )
    try:
        outcome = _OutcomeUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        why = "it is empty" if not data else f"{len(data)} bytes, truncated or corrupt: {_describe(exc)}"
        raise PayloadError(damaged.format(why=why)) from exc
    if (
        not isinstance(outcome, dict)
        or outcome.get("format") != 1
        or outcome.get("kind") not in _OUTCOME_KINDS
    ):
        raise PayloadError(damaged.format(why="it does not hold an outcome of a known format"))
    wrong = [key for key, types in _OUTCOME_FIELDS.items() if not isinstance(outcome.get(key), types)]
    if wrong:
        raise PayloadError(
            damaged.format(why=f"its fields {', '.join(wrong)} are missing or of the wrong type")
        )
    return outcome


def _remote_exception(outcome: dict[str, Any], *, job_id: str, host: str) -> Exception:
    remote_traceback: str = outcome["traceback"]
    exc: object = None
    if outcome["exception"] is not None:
        try:
            exc = cloudpickle.loads(outcome["exception"])
        except Exception:
            exc = None  # its class is not importable here, or it cannot be rebuilt from its args
    if not isinstance(exc, Exception):  # never re-raise SystemExit or KeyboardInterrupt here
        exc_type = outcome["exc_type"] or "an exception"
        return RemoteError(
            f"Job {job_id} on {host} raised {exc_type}: {outcome['message']}",
            exc_type=outcome["exc_type"],
            remote_traceback=remote_traceback,
            job_id=job_id,
        )
    if sys.version_info >= (3, 11):
        exc.add_note(f"Remote traceback (job {job_id} on {host}):\n{remote_traceback.rstrip()}")
    # An exception class with __slots__ cannot take the attribute; the note still carries the traceback.
    with contextlib.suppress(AttributeError):
        setattr(exc, _REMOTE_TRACEBACK, remote_traceback)
    return exc


def _referenced_objects(fn: object) -> list[tuple[str, object]]:
    """List what pickling ``fn`` by value pickles with it, each with a label for messages."""
    if isinstance(fn, functools.partial):
        return (
            [("the partial's function", fn.func)]
            + [(f"the partial's args[{i}]", arg) for i, arg in enumerate(fn.args)]
            + [(f"the partial's keyword {key!r}", value) for key, value in fn.keywords.items()]
        )
    found: list[tuple[str, object]] = []
    if hasattr(fn, "__self__"):
        found.append(("the bound object", fn.__self__))
    code = getattr(fn, "__code__", None)
    for name, cell in zip(
        getattr(code, "co_freevars", ()), getattr(fn, "__closure__", None) or (), strict=False
    ):
        try:
            found.append((f"the closure variable {name!r}", cell.cell_contents))
        except ValueError:
            continue  # the cell is not yet filled
    fn_globals = getattr(fn, "__globals__", {})
    found += [
        (f"the global {name!r}", fn_globals[name])
        for name in getattr(code, "co_names", ())
        if name in fn_globals
    ]
    found += [
        (f"the default of parameter {i}", value)
        for i, value in enumerate(getattr(fn, "__defaults__", None) or ())
    ]
    found += [
        (f"the default of {key!r}", value)
        for key, value in (getattr(fn, "__kwdefaults__", None) or {}).items()
    ]
    if not found and not hasattr(fn, "__code__"):
        found += [(f"its attribute {key!r}", value) for key, value in getattr(fn, "__dict__", {}).items()]
    return found


def _find_unpicklable(
    labelled: list[tuple[str, object]], depth: int = 0
) -> tuple[str, object, Exception] | None:
    """Return the first of ``labelled`` that cannot be pickled, looking into functions it holds."""
    for label, obj in labelled:
        try:
            cloudpickle.dumps(obj)
        except Exception as exc:
            # A nested function fails because of what *it* refers to; name that instead.
            inner = (
                _find_unpicklable(_referenced_objects(obj), depth + 1)
                if callable(obj) and depth < 3
                else None
            )
            if inner is not None:
                return (f"{inner[0]} (via {label})", inner[1], inner[2])
            return label, obj, exc
    return None


def _callable_name(fn: object) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_callable_name(fn.func)})"
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else str(qualname)


def _type_name(obj: object) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
