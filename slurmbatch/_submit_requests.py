"""What the submitter is handed and hands back: one call to submit, and the sbatch call it becomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs

from ._errors import SessionClosedError
from .future import JobFuture
from .payload import FunctionBlob, PackedCall
from .spec import JobSpec

__all__ = ["ArrayShape", "Job", "Render", "SubmitRequest", "closed_error", "fail"]


@attrs.frozen
class ArrayShape:
    """How many tasks an array job has (indices ``0..size-1``)."""

    size: int


#: Renders the batch script of a job: ``(spec, function, token, array or None, dependency) -> script``.
Render = Callable[[JobSpec, FunctionBlob, str, "ArrayShape | None", "str | None"], str]


@attrs.define(eq=False)
class SubmitRequest:
    """One call to submit, and where the submitter reports back (``future``, or ``error``)."""

    function: FunctionBlob
    call: PackedCall
    spec: JobSpec
    done: anyio.Event = attrs.field(factory=anyio.Event)
    token: str = ""
    job_id: str | None = None
    error: BaseException | None = None
    future: JobFuture[Any] | None = None
    #: Unfinished jobs whose values the call takes: it is submitted to start after them.
    upstream: tuple[JobFuture[Any], ...] = ()


@attrs.define(eq=False)
class Job:
    """One sbatch call: a single job, or an array job carrying several requests.

    ``dependency`` is its ``--dependency`` (``afterok:...``, or ``aftercorr:...`` for an array whose
    task ``i`` takes the value of task ``i`` of another array), if its calls take other jobs' values.
    """

    token: str
    requests: list[SubmitRequest]
    array: ArrayShape | None
    dependency: str | None = None


def closed_error(*, under_way: bool = False) -> SessionClosedError:
    if under_way:
        return SessionClosedError(
            "The session closed while this job was being submitted: if sbatch accepted it, it was cancelled "
            "with the session's other jobs. Submit inside the session's `async with` block and await the "
            "submission before the block ends."
        )
    return SessionClosedError(
        "The session closed before this job was submitted; nothing was sent. Submit inside the session's "
        "`async with` block and await the submission before the block ends."
    )


def fail(requests: Sequence[SubmitRequest], error: BaseException) -> None:
    for request in requests:
        if not request.done.is_set():
            request.error = error
            request.done.set()
