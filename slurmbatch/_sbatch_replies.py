"""What the replies of one batch of sbatch calls mean for its requests: a job id or an error each.

The journal records the outcome before the callers are released, so that a caller holding a job id
always finds it in the journal (a ``detach()`` right after ``submit()`` leaves no job recorded as
"submitting").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._errors import SubmissionError
from ._journal import Journal
from ._submit_requests import Job, SubmitRequest
from .slurm.batch import SbatchReply
from .slurm.commands import array_task_id

__all__ = ["record_in_journal", "release_callers", "request_tokens", "settle"]


def request_tokens(job: Job) -> list[str]:
    """The tokens the job's requests get: the job's own, or one per array task."""
    if job.array is None:
        return [job.token]
    return [f"{job.token}.{index}" for index in range(len(job.requests))]


def settle(
    jobs: Sequence[Job],
    replies: dict[str, SbatchReply],
    stderr: str,
    *,
    on_submitted: Callable[[SubmitRequest], None],
) -> None:
    """Give each request its token and job id (then call ``on_submitted``), or its SubmissionError."""
    for job in jobs:
        reply = replies.get(job.token)
        job_id = reply.job_id if reply is not None else None
        for index, request in enumerate(job.requests):
            if reply is None:
                said = stderr or "no answer"
                request.error = SubmissionError(
                    f"The submit command failed on the login node before sbatch answered: {said}",
                    sbatch_stderr=said,
                )
            elif job_id is None:
                request.error = SubmissionError(
                    f"sbatch refused the job: {reply.output}. Check the JobSpec options (each becomes an "
                    "#SBATCH line).",
                    sbatch_stderr=reply.output,
                )
            elif job.array is None:
                request.token, request.job_id = job.token, job_id
                on_submitted(request)
            else:
                request.token, request.job_id = f"{job.token}.{index}", array_task_id(job_id, index)
                on_submitted(request)


async def record_in_journal(journal: Journal, jobs: Sequence[Job]) -> None:
    """Record the job ids sbatch gave, and forget the jobs it refused."""
    await journal.submitted((r.token, r.job_id) for job in jobs for r in job.requests if r.job_id is not None)
    await journal.refused(
        token for job in jobs if job.requests[0].job_id is None for token in request_tokens(job)
    )


def release_callers(jobs: Sequence[Job]) -> None:
    """Wake the ``submit()`` calls waiting for these jobs' answers."""
    for job in jobs:
        for request in job.requests:
            request.done.set()
