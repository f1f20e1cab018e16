"""Pickling functions and arguments for the job side, and reading the outcome the runner writes back.

Functions and arguments are pickled with cloudpickle, so functions defined in ``__main__``, lambdas and
closures travel by value; functions of importable modules travel by reference and their module must be
importable on the cluster too. The outcome file (see :mod:`slurmbatch.remote.outcome`) is a
standard-library pickle of primitives, so it can be read even when its value or exception cannot.

The calls of a job array travel in one file (:func:`pack_argument_table`), and large arguments travel
by content (:class:`ArgumentStore`): each is pickled and uploaded once, and the calls that use it hold a
reference to its digest. :mod:`slurmbatch.remote.table` and :mod:`slurmbatch.remote.loading`, which
read them, describe the formats.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import pickle
import struct
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import cloudpickle

from ._errors import PayloadError, RemoteEnvironmentError, RemoteError, SlurmBatchError
from ._referring_pickler import HoldsFuture, UpstreamValues, dumps_alone, dumps_referring
from ._tracebacks import restore_source_lines
from .future import RemoteValue
from .remote.bundle import runner_bundle
from .remote.table import (
    ARGUMENT_TABLE_HEADER,
    ARGUMENT_TABLE_MAGIC,
    ARGUMENT_TABLE_SLOT,
    ARGUMENT_TABLE_VERSION,
)

__all__ = [
    "ArgumentStore",
    "FunctionBlob",
    "PackedCall",
    "UpstreamValues",
    "pack_argument_table",
    "pack_arguments",
    "pack_function",
    "runner_digest",
    "runner_source",
    "unpack_outcome",
    "unpack_value",
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
    """Pickle one call's ``(args, kwargs)`` for the job side, every argument inline.

    Raises :class:`PayloadError` naming the argument (``args[i]`` or the keyword) that cannot be pickled.
    """
    call = (tuple(args), dict(kwargs))
    try:
        return bytes(cloudpickle.dumps(call))
    except Exception as exc:
        raise _unpicklable_argument(_labelled_arguments(call), exc) from exc


@attrs.frozen
class PackedCall:
    """One call pickled for the job side by :meth:`ArgumentStore.pack`.

    ``data`` is the call file. ``blobs`` maps the sha256 (hex) of each large argument the call refers to
    onto its pickle, which the job side loads from ``fn/<digest>.pkl``: upload those not uploaded yet.
    """

    data: bytes = attrs.field(repr=False)
    blobs: Mapping[str, bytes] = attrs.field(repr=lambda blobs: f"<{len(blobs)} large argument(s)>")


_NO_BLOBS: Mapping[str, bytes] = types.MappingProxyType({})


@attrs.frozen
class _Remembered:
    value: object  # held so that its id() stays its own while remembered
    digest: str
    data: bytes


class ArgumentStore:
    """Pickles calls so that a large argument travels once per session, however many calls use it.

    Each argument whose pickle is at least ``threshold`` bytes is pickled on its own and replaced in the
    call by a reference to its sha256; the job side loads it from the function directory. The most
    recently used ``remembered`` large arguments, up to ``remembered_bytes`` of pickles in all, are
    remembered by identity: passing one of them again costs a lookup, not a pickling.

    An argument is taken to stay as it was while remembered: one changed in place and passed again goes
    with its first content. Not thread-safe; use one store per session.

    An argument whose pickle is larger than ``max_bytes`` (if given) is refused with a
    :class:`PayloadError` that names it.
    """

    def __init__(
        self,
        threshold: int = 64 * 1024,
        *,
        remembered: int = 32,
        remembered_bytes: int = 1 << 30,
        max_bytes: int | None = None,
    ) -> None:
        if threshold < 0 or remembered < 0 or remembered_bytes < 0:
            raise ValueError("threshold, remembered and remembered_bytes must be 0 or more")
        self._threshold = threshold
        self._max_bytes = max_bytes
        self._remembered_max = remembered
        self._remembered_bytes_max = remembered_bytes
        self._remembered: OrderedDict[int, _Remembered] = OrderedDict()
        self._remembered_bytes = 0

    def pack(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], upstream: UpstreamValues | None = None
    ) -> PackedCall:
        """Pickle the call ``fn(*args, **kwargs)``: its call file and the large arguments it refers to.

        ``upstream`` pickles the job futures among the arguments, anywhere in them; without it, a
        future cannot be pickled. Raises :class:`PayloadError` naming the argument (``args[i]`` or the
        keyword) that cannot be pickled.
        """
        call = (tuple(args), dict(kwargs))
        if self._all_surely_small(call):
            # Builtin values only: the standard pickler writes the same bytes as cloudpickle for them,
            # several times faster, and none of them needs pickling on its own to be measured.
            return PackedCall(pickle.dumps(call, protocol=cloudpickle.DEFAULT_PROTOCOL), _NO_BLOBS)
        references: dict[int, str] = {}
        blobs: dict[str, bytes] = {}
        for key, value in _keyed_arguments(call):
            large = self._large(key, value, upstream)
            if large is not None:
                references[id(value)], blobs[large.digest] = large.digest, large.data
        try:
            return PackedCall(dumps_referring(call, references, upstream), blobs)
        except SlurmBatchError:
            raise  # a future that cannot be an argument: the upstream said why
        except Exception as exc:
            raise _unpicklable_argument(_labelled_arguments(call), exc) from exc

    def _all_surely_small(self, call: tuple[tuple[Any, ...], dict[str, Any]]) -> bool:
        # Plain loops: this runs for every call, and all() over a generator costs as much as the pickling.
        for values in (call[0], call[1].values()):
            for value in values:
                if _builtin_size_bound(value, self._threshold) is None:
                    return False
        return True

    def _large(self, key: int | str, value: object, upstream: UpstreamValues | None) -> _Remembered | None:
        """The pickle of ``value``, argument ``key``, if it is large, else None (it stays inline)."""
        if _builtin_size_bound(value, self._threshold) is not None:
            return None
        remembered = self._remembered.get(id(value))
        if remembered is not None and remembered.value is value:
            self._remembered.move_to_end(id(value))
            return remembered
        try:
            data = dumps_alone(value, upstream)
        except HoldsFuture:
            return None  # pickled with the call, where its futures become references
        except Exception as exc:
            raise _unpicklable_argument([(_argument_label(key), value)], exc) from exc
        if len(data) < self._threshold:
            return None
        if self._max_bytes is not None and len(data) > self._max_bytes:
            raise PayloadError(
                f"Cannot send {_argument_label(key)}: it pickles to {_megabytes(len(data))}, over "
                f"max_argument_bytes={self._max_bytes} ({_megabytes(self._max_bytes)}). Leave large data on "
                "the cluster and pass its path, or open the session with a larger max_argument_bytes."
            )
        large = _Remembered(value=value, digest=hashlib.sha256(data).hexdigest(), data=data)
        self._remember(large)
        return large

    def _remember(self, large: _Remembered) -> None:
        self._remembered[id(large.value)] = large
        self._remembered_bytes += len(large.data)
        # The store keeps each remembered argument and its pickle alive: bound both.
        while self._remembered and (
            len(self._remembered) > self._remembered_max
            or self._remembered_bytes > self._remembered_bytes_max
        ):
            _, evicted = self._remembered.popitem(last=False)
            self._remembered_bytes -= len(evicted.data)


def pack_argument_table(calls: Sequence[bytes]) -> bytes:
    """Pack the call files ``calls`` into the one argument file of a job array.

    Each call file is a :attr:`PackedCall.data` or what :func:`pack_arguments` returns. Task ``i`` of the
    array runs ``calls[i]`` and reads only that entry of the file (``runner.py run ... --packed``; the
    format is described in :mod:`slurmbatch.remote.table`).
    """
    count = len(calls)
    lengths = [len(call) for call in calls]
    entries_start = ARGUMENT_TABLE_HEADER.size + count * ARGUMENT_TABLE_SLOT.size
    slots = [0] * (2 * count)
    slots[0::2] = itertools.islice(itertools.accumulate(lengths, initial=entries_start), count)
    slots[1::2] = lengths
    header = ARGUMENT_TABLE_HEADER.pack(ARGUMENT_TABLE_MAGIC, ARGUMENT_TABLE_VERSION, count)
    table = struct.pack(f"<{2 * count}Q", *slots)
    return b"".join(itertools.chain((header, table), calls))


# What a standalone pickle adds to its values besides frame headers: protocol, stop.
_PICKLE_OVERHEAD = 8
# At most what one value adds inside a pickle to its own bytes: opcode, 8-byte length, memo entry.
_ITEM_OVERHEAD = 10
# Walking more items than this in Python costs more than pickling them: pickle the argument to measure.
_WALK_LIMIT = 64
_FIXED_SIZE = frozenset({float, bool, type(None)})
_COLLECTIONS = frozenset({list, tuple, set, frozenset, dict})


def _builtin_size_bound(value: object, limit: int) -> int | None:
    """An upper bound of the size of ``value``'s pickle if it is below ``limit`` and cheap to know.

    Cheap to know for numbers, strings, bytes, None, and small lists, tuples, sets and dicts of those;
    None for anything else. Exact types only: a subclass may pickle anything along with its value.
    """
    bound = _PICKLE_OVERHEAD
    walked = 0
    # Any: the walk dispatches on exact types itself, so the checker need not narrow (nor cast, which costs).
    items: list[Any] = [value]
    for item in items:  # containers append their items to the list being walked
        kind = type(item)
        if kind is str:
            bound += _ITEM_OVERHEAD + 4 * len(item)  # UTF-8 takes at most 4 bytes a character
        elif kind is int:
            bound += _ITEM_OVERHEAD + item.bit_length() // 8 + 1
        elif kind in _FIXED_SIZE:
            bound += _ITEM_OVERHEAD
        elif kind is bytes:
            bound += _ITEM_OVERHEAD + len(item)
        elif kind in _COLLECTIONS:
            walked += len(item)
            if walked > _WALK_LIMIT:
                return None
            items.extend(item)
            if kind is dict:
                items.extend(item.values())
            bound += 2 * _ITEM_OVERHEAD  # opening and closing opcodes, memo entry, batch marks
        else:
            return None
    bound = _framed(bound)
    return bound if bound < limit else None


def _framed(size: int) -> int:
    """``size`` plus the headers of the frames a pickle of ``size`` bytes is cut into (9 bytes a frame).

    Frames hold about 64 KiB; a value too large for one is written between two frames.
    """
    return size + 18 * (size // 65536 + 1)


def _keyed_arguments(call: tuple[tuple[Any, ...], dict[str, Any]]) -> Iterator[tuple[int | str, Any]]:
    """Each argument of ``call`` with its index (positional) or name (keyword)."""
    yield from enumerate(call[0])
    yield from call[1].items()


def _labelled_arguments(call: tuple[tuple[Any, ...], dict[str, Any]]) -> list[tuple[str, object]]:
    return [(_argument_label(key), value) for key, value in _keyed_arguments(call)]


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _argument_label(key: int | str) -> str:
    """How messages name positional argument ``key`` (an index) or keyword argument ``key``."""
    return f"args[{key}]" if isinstance(key, int) else f"keyword argument {key!r}"


def _unpicklable_argument(labelled: list[tuple[str, object]], exc: Exception) -> PayloadError:
    culprit = _find_unpicklable(labelled)
    label, obj, cause = culprit if culprit is not None else ("the arguments", tuple(labelled), exc)
    return PayloadError(
        f"Cannot send {label} (a {_type_name(obj)} object) to the job: it cannot be pickled "
        f"({_describe(cause)}). Pass the data it holds instead, and create such objects inside the function."
    )


def unpack_outcome(data: bytes, *, job_id: str, source_file: str | None = None) -> Any:
    """Return the value in the outcome file ``data`` of job ``job_id``, or raise what the job raised.

    A large value the job wrote to a file of its own comes back as a :class:`RemoteValue` naming it.

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
        if isinstance(outcome.get("value_file"), str) and isinstance(outcome.get("value_size"), int):
            return RemoteValue(outcome["value_file"], outcome["value_size"])
        if outcome["value"] is None:
            return None
        return unpack_value(outcome["value"], job_id=job_id)
    raise _remote_exception(outcome, job_id=job_id, host=host)


def unpack_value(data: bytes, *, job_id: str) -> Any:
    """The return value of job ``job_id`` pickled in ``data``; :class:`PayloadError` if it cannot be
    unpickled here."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        raise PayloadError(
            f"The return value of job {job_id} cannot be unpickled here ({_describe(exc)}). Make the "
            "modules and classes it uses importable on the client, or return plain data."
        ) from exc


@functools.cache
def runner_source() -> bytes:
    """Return the bytes of the job-side program, built from :mod:`slurmbatch.remote` as one file."""
    return runner_bundle().encode()


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
