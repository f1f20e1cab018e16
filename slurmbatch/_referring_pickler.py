"""Picklers of calls: large arguments and job futures replaced by references the job side resolves.

A large argument becomes ``("slurmbatch.blob", SHA256)`` (see :mod:`slurmbatch.remote.loading`); a job
future among the arguments becomes what :class:`UpstreamValues` says, a reference to the upstream job's
files (see :mod:`slurmbatch.remote.upstream`), or its value when that is already on the client.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Mapping
from typing import Any, Protocol

import cloudpickle

from .remote.loading import BLOB_REFERENCE

__all__ = ["HoldsFuture", "UpstreamValues", "dumps_alone", "dumps_referring"]


class UpstreamValues(Protocol):
    """How the futures of other jobs found in a call's arguments are pickled (see ``remote/upstream.py``)."""

    def future_of(self, obj: object) -> Any:
        """The job future ``obj`` stands for, or None if it is not one."""

    def reference(self, future: Any) -> tuple[str, str, str, str] | None:
        """The persistent id that makes the job side read ``future``'s value from the cluster, or None
        to put its value (already on the client) in the call instead."""


class HoldsFuture(Exception):
    """Raised while pickling an argument on its own: it holds a job future, so it stays in the call."""


class _ReferringPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """A cloudpickle pickler that writes a reference in place of each object in ``references``, and of
    each job future (through ``upstream``)."""

    def __init__(
        self, file: io.BytesIO, references: Mapping[int, str], upstream: UpstreamValues | None
    ) -> None:
        super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
        self._references = references
        self._upstream = upstream

    def persistent_id(self, obj: object) -> tuple[str, ...] | None:
        digest = self._references.get(id(obj))
        if digest is not None:
            return (BLOB_REFERENCE, digest)
        if self._upstream is not None:
            future = self._upstream.future_of(obj)
            if future is not None:
                return self._upstream.reference(future)  # None: reducer_override puts its value here
        return None

    def reducer_override(self, obj: object) -> Any:
        future = self._upstream.future_of(obj) if self._upstream is not None else None
        if future is not None:
            # A finished job's value, already here: it goes in the call, rebuilt by the standard library.
            return operator.itemgetter(0), ([future._value],)
        return super().reducer_override(obj)


class _FutureSeekingPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """A cloudpickle pickler that gives up (:class:`HoldsFuture`) when it meets a job future."""

    def __init__(self, file: io.BytesIO, upstream: UpstreamValues) -> None:
        super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
        self._upstream = upstream

    def persistent_id(self, obj: object) -> None:
        if self._upstream.future_of(obj) is not None:
            raise HoldsFuture
        return None


def dumps_alone(value: object, upstream: UpstreamValues | None) -> bytes:
    if upstream is None:
        return bytes(cloudpickle.dumps(value))
    file = io.BytesIO()
    _FutureSeekingPickler(file, upstream).dump(value)
    return file.getvalue()


def dumps_referring(
    call: tuple[tuple[Any, ...], dict[str, Any]],
    references: Mapping[int, str],
    upstream: UpstreamValues | None = None,
) -> bytes:
    if not references and upstream is None:
        return bytes(cloudpickle.dumps(call))
    file = io.BytesIO()
    _ReferringPickler(file, references, upstream).dump(call)
    return file.getvalue()
