"""Submitting a call again when its job ended with an outcome its JobSpec retries.

A retry is a new Slurm job (a new id) for the same future, under the same token: it writes its result
where the first attempt would have, so the rest of the session follows it like any job. It goes through
the submitter like a first submission, fence and journal included, so a process killed meanwhile leaves
either the ended attempt or the new one in the journal, never both and never neither. A task of an array
is retried as a job of its own that runs the same call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskGroup

from ._submit_requests import SubmitRequest
from .future import JobFuture

__all__ = ["Retries"]

logger = logging.getLogger("slurmbatch")


class Retries:
    """The calls whose spec allows retries, and the submission of their next attempts.

    Args:
        submit: Submits a request and waits for sbatch's answer (the submitter's ``submit``).
        give_up: Resolves a future whose next attempt could not be submitted with the given error.
        task_group: Where the submissions of next attempts run.
    """

    def __init__(
        self,
        *,
        submit: Callable[[SubmitRequest], Awaitable[None]],
        give_up: Callable[[JobFuture[Any], BaseException], None],
        task_group: TaskGroup,
    ) -> None:
        self._submit = submit
        self._give_up = give_up
        self._tg = task_group
        self._calls: dict[str, SubmitRequest] = {}  # by token: what to submit again

    def remember(self, request: SubmitRequest) -> None:
        """Keep the call of a just-submitted request if its spec allows retries."""
        if request.spec.retries and request.future is not None:
            self._calls.setdefault(request.future.token, request)

    def take(self, future: JobFuture[Any], error: BaseException) -> bool:
        """Whether ``future``'s job, which ended with ``error``, is tried again; if so, start that."""
        request = self._calls.get(future.token)
        if request is None:
            return False
        retries_used = len(future.attempts) - 1
        if retries_used >= request.spec.retries or not isinstance(error, request.spec.retry_on):
            del self._calls[future.token]
            return False
        logger.info(
            "job %s ended with %s: submitting it again (retry %d of %d)",
            future.job_id,
            type(error).__name__,
            retries_used + 1,
            request.spec.retries,
        )
        self._tg.start_soon(self._again, future, request, error)
        return True

    async def _again(self, future: JobFuture[Any], first: SubmitRequest, error: BaseException) -> None:
        again = SubmitRequest(first.function, first.call, first.spec, token=future.token, future=future)
        try:
            await self._submit(again)
        except Exception as refused:
            # The attempt that ended stands; its error says why no further attempt was made.
            del self._calls[future.token]
            add_note = getattr(error, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(f"It was not submitted again: {refused}")
            self._give_up(future, error)
