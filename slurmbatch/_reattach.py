"""Taking over the jobs an earlier session left uncollected, as recorded in the journal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import SubmissionError
from ._journal import Journal, JournalEntry
from ._poller import Poller
from ._submitter import Submitter
from .future import JobFuture
from .slurm.commands import array_task_id
from .slurm.states import JobState

__all__ = ["reattach"]

logger = logging.getLogger("slurmbatch")


async def reattach(
    journal: Journal,
    session_id: str | None,
    *,
    host: str,
    workdir: str,
    poller: Poller,
    submitter: Submitter,
    new_future: Callable[[JournalEntry, str | None], JobFuture[Any]],
) -> list[JobFuture[Any]]:
    """Futures for the uncollected jobs of ``session_id`` (None: of every earlier session on ``host`` and
    ``workdir`` that is no longer running), tracked by ``poller``; see :meth:`SlurmSession.reattach`."""
    if session_id is None:
        sessions = await journal.sessions_with_uncollected_jobs(host, workdir)
    else:
        known = await journal.workdir_of(session_id)
        if known is None:
            raise ValueError(f"The journal {journal.path} knows no session {session_id!r}.")
        if known != workdir:
            raise ValueError(
                f"Session {session_id} kept its files in {known}, this one in {workdir}: "
                f"open this session with remote_workdir={known!r} to reattach."
            )
        if await journal.is_running(session_id):
            raise ValueError(
                f"Session {session_id} is still open (in this process or another), and collects its own "
                "jobs: reattach to it once it has ended (it detached, crashed, or its process was killed)."
            )
        sessions = [session_id]
    entries = await journal.uncollected(sessions)
    job_ids = await _job_ids_of(submitter, entries)
    attempts = await journal.attempts([e.token for e in entries])
    futures: list[JobFuture[Any]] = []
    for entry in entries:
        job_id = job_ids.get(entry.token)
        future = new_future(entry, job_id)
        tried = attempts.get(entry.token, [])
        future._attempts[:0] = [earlier for earlier in tried if earlier != job_id]
        futures.append(future)
        if job_id is None:
            poller.resolve(
                future,
                exc=SubmissionError(
                    "This job was never submitted: the process that was submitting it stopped before "
                    "sbatch ran. Submit it again."
                ),
                state=JobState.UNKNOWN,
            )
        else:
            poller.track(future)
    await journal.adopt(e.token for e in entries)
    if futures:
        logger.info("reattached %d job(s) of %d earlier session(s)", len(futures), len(sessions))
    return futures


async def _job_ids_of(submitter: Submitter, entries: Sequence[JournalEntry]) -> dict[str, str]:
    """Job ids by token; for jobs whose batch may not have run, the batch's fence tells."""
    ids = {e.token: e.job_id for e in entries if e.job_id is not None}
    for fence in dict.fromkeys(e.fence for e in entries if e.job_id is None):
        replies, _ = await submitter.recover(fence)
        for entry in (e for e in entries if e.fence == fence):
            own = (replies or {}).get(entry.token)  # a single job, or a retry of an array's task
            if own is not None and own.job_id is not None:
                ids[entry.token] = own.job_id
                continue
            job_token, _, index = entry.token.partition(".")
            reply = (replies or {}).get(job_token)
            if reply is not None and reply.job_id is not None:
                ids[entry.token] = array_task_id(reply.job_id, int(index)) if index else reply.job_id
    return ids
