"""Submitting a call again when its job ended with an outcome its JobSpec retries.

A retry is a new Slurm job (a new id) for the same future, under the same token: it writes its result
where the first attempt would have, so the rest of the session follows it like any job. It goes through
the submitter like a first submission, fence and journal included, so a process killed meanwhile leaves
either the ended attempt or the new one in the journal, never both and never neither. A task of an array
is retried as a job of its own that runs the same call.

A cancel wins over a retry: a future cancelled while its next attempt waits to be submitted is resolved
as cancelled without submitting it, and an attempt sbatch accepted meanwhile is cancelled at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from anyio.abc import TaskGroup

from ._errors import JobCancelled
from ._submit_requests import SubmitRequest
from .future import JobFuture

__all__ = ["Retries"]

logger = logging.getLogger("slurmbatch")


class Retries:
    """The calls whose spec allows retries, and the submission of their next attempts.

    Args:
        submit: Submits a request and waits for sbatch's answer (the submitter's ``submit``).
        give_up: Resolves a future whose next attempt could not be submitted with the given error.
        cancel: Cancels the jobs of futures with ``scancel`` (the session's job cleanup's ``cancel``).
        task_group: Where the submissions of next attempts run.
    """

    def __init__(
        self,
        *,
        submit: Callable[[SubmitRequest], Awaitable[None]],
        give_up: Callable[[JobFuture[Any], BaseException], None],
        cancel: Callable[[Sequence[JobFuture[Any]]], Awaitable[object]],
        task_group: TaskGroup,
    ) -> None:
        self._submit = submit
        self._give_up = give_up
        self._cancel = cancel
        self._tg = task_group
        self._calls: dict[str, SubmitRequest] = {}  # by token: what to submit again
        self._pending: set[str] = set()  # tokens whose next attempt is being submitted
        self._cancelled: set[str] = set()  # of those, the ones cancelled meanwhile

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
        self._pending.add(future.token)
        self._tg.start_soon(self._again, future, request, error)
        return True

    def cancelled(self, futures: Sequence[JobFuture[Any]]) -> None:
        """The user cancelled ``futures``: none of them is submitted again from now on."""
        for future in futures:
            self._calls.pop(future.token, None)
            if future.token in self._pending:
                self._cancelled.add(future.token)

    async def _again(self, future: JobFuture[Any], first: SubmitRequest, error: BaseException) -> None:
        token = future.token
        if token in self._cancelled:
            self._pending.discard(token)
            self._cancelled.discard(token)
            self._give_up(future, _cancelled_before_retry(future))
            return
        again = SubmitRequest(first.function, first.call, first.spec, token=token, future=future)
        try:
            await self._submit(again)
        except Exception as refused:
            # The attempt that ended stands; its error says why no further attempt was made.
            self._calls.pop(token, None)
            self._pending.discard(token)
            self._cancelled.discard(token)
            # The log says so on every Python; 3.11+ also shows it with the error (a note).
            logger.warning("job %s was not retried: %s", future.job_id, refused)
            add_note = getattr(error, "add_note", None)
            if add_note is not None:
                add_note(f"It was not submitted again: {refused}")
            self._give_up(future, error)
            return
        self._pending.discard(token)
        if token in self._cancelled:
            # Cancelled while sbatch was taking the new attempt: that job (now tracked) is cancelled
            # too, and the poller resolves the future as cancelled when Slurm reports it.
            self._cancelled.discard(token)
            try:
                await self._cancel([future])
            except Exception as failed:
                logger.warning(
                    "could not cancel job %s, the retry of a cancelled call: %s", future.job_id, failed
                )


def _cancelled_before_retry(future: JobFuture[Any]) -> JobCancelled:
    return JobCancelled(
        f"Job {future.job_id} was cancelled before its next attempt was submitted.",
        job_id=future.job_id,
        state="CANCELLED",
    )
