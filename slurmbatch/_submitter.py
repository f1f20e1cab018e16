"""Coalesced submission: concurrent ``submit()`` calls reach the login node together.

Requests queue in arrival order. A worker takes whatever is waiting (up to ``max_batch``), groups the
calls that share a function and a JobSpec into job arrays (one job record for slurmctld, one packed
argument file), uploads every file of the batch through one SFTP session, and runs every sbatch of the
batch in one remote command that reports each job's id or its own error. A lone request is sent at once;
when requests stream in, a worker waits a few milliseconds to fill its batch. ``workers`` batches may be
in flight at once, so the uploads of one overlap the sbatch calls of another.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Callable, Iterator, Sequence

import anyio
from anyio.abc import TaskStatus

from ._errors import ConnectionLost, SubmissionError
from ._job_groups import group_jobs
from ._journal import Journal
from ._lost_answers import look_up_tokens
from ._reconnect import Outage, retry_lost
from ._remote_layout import RemoteLayout, new_token
from ._sbatch_replies import record_in_journal, release_callers, request_tokens, settle
from ._submit_requests import ArrayShape, Job, Render, SubmitRequest, closed_error, fail
from ._uploads import Uploads
from .payload import pack_argument_table
from .rpc_budget import TokenBucket
from .slurm.batch import (
    NOT_STARTED,
    UNFINISHED,
    SbatchReply,
    batch_sbatch_command,
    fence_recovery_command,
    fenced_script,
    parse_batch_sbatch,
    write_files_script,
)
from .transport import CommandResult, Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["ArrayShape", "SubmitRequest", "Submitter"]


class Submitter:
    """Turns queued :class:`SubmitRequest` objects into Slurm jobs, a batch at a time."""

    def __init__(
        self,
        pool: Transport,
        layout: RemoteLayout,
        *,
        render: Render,
        on_submitted: Callable[[SubmitRequest], None],
        max_array_size: int = 1001,
        budget: TokenBucket | None = None,
        slurm_setup: str = "",
        reconnect_deadline: float = 60.0,
        journal: Journal | None = None,
        workers: int = 2,
        max_batch: int = 128,
        window: float = 0.005,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._render = render
        self._on_submitted = on_submitted
        self._max_array_size = max(1, max_array_size)
        self._budget = budget
        self._slurm_setup = slurm_setup
        self._reconnect_deadline = reconnect_deadline
        self._journal = journal
        # Fences of answered batches: removed by the next batch's command (or at the session's end).
        self.finished_fences: list[str] = []
        self._workers = workers
        self._max_batch = max_batch
        self._window = window
        self._send, self._receive = anyio.create_memory_object_stream[list[SubmitRequest]](math.inf)
        self._uploads = Uploads(pool, layout, reconnect_deadline=reconnect_deadline)
        self.batches = 0
        self.sbatch_calls = 0
        # Closed when the session ends: queued requests then fail instead of waiting for a worker.
        self._closed = False
        self._busy = 0  # batches taken from the queue and not yet answered
        self._idle = anyio.Event()
        self._idle.set()
        # Fenced commands whose reply was lost to a cancellation (by fence): they may run on remotely.
        self._interrupted: dict[str, list[Job]] = {}

    def forget_uploads(self) -> None:
        """The remote work directory was recreated: upload functions and large arguments again."""
        self._uploads.forget()

    @property
    def tables_uploaded(self) -> int:
        """Argument tables of array jobs uploaded by SFTP."""
        return self._uploads.tables_uploaded

    async def submit(self, request: SubmitRequest) -> None:
        """Queue ``request`` and wait until sbatch answered for it; ``request.future`` is then set.

        Raises :class:`SubmissionError` with sbatch's own message when the job was refused. If the
        caller is cancelled while waiting, the job is still submitted and tracked by the session.
        """
        await self.submit_all([request])
        if request.error is not None:
            raise request.error

    async def submit_all(self, requests: list[SubmitRequest]) -> None:
        """Queue ``requests`` as one unit (e.g. a ``map``) and wait until sbatch answered for all."""
        if not requests:
            return
        if self._closed:
            raise closed_error()
        await self._send.send(requests)
        for request in requests:
            # An event already set still costs a pass of the event loop per wait: a map of 10 000 items
            # answered by a few sbatch calls would spend a third of its time on them.
            if not request.done.is_set():
                await request.done.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the queue until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._workers):
                    tg.start_soon(self._worker)
                task_status.started()
        finally:
            self.close()

    def close(self) -> None:
        """Take no more requests: those queued and those sent later fail with :class:`SessionClosedError`.

        Batches already under way go on; :meth:`wait_idle` waits for them.
        """
        self._closed = True
        queued: list[SubmitRequest] = []
        self._drain(queued, limit=math.inf)
        fail(queued, closed_error())

    async def wait_idle(self) -> None:
        """Wait until no batch is under way (each is answered, failed, or interrupted)."""
        await self._idle.wait()

    async def claim_interrupted(self) -> None:
        """Find out what each fenced command cut short by a cancellation did, and report its jobs.

        Its fence is claimed: a command that had not started never will. The jobs it submitted are
        reported like any others (tracked by the session, which then cancels them with the rest).
        """
        for fence, jobs in list(self._interrupted.items()):
            try:
                replies, _ = await self.recover(fence)
            except Exception as exc:  # left listed: unsettled_tokens() names its jobs
                logger.warning("could not find out what an interrupted submission did: %s", exc)
                continue
            del self._interrupted[fence]
            if replies is not None:
                self.finished_fences.append(fence)
                await self._report(jobs, replies, "the session closed before sbatch answered")
            elif self._journal is not None:
                await self._journal.refused(t for job in jobs for t in self._request_tokens(job))

    def unsettled_tokens(self) -> list[str]:
        """Tokens of jobs whose submission was cut short and not yet looked up (see claim_interrupted)."""
        return [job.token for jobs in self._interrupted.values() for job in jobs]

    async def _worker(self) -> None:
        window = 0.0
        async for first in self._receive:
            batch = list(first)
            self._drain(batch)
            if self._closed:
                fail(batch, closed_error())
                continue
            if window and len(batch) < self._max_batch:
                # Requests are streaming in: wait a moment so that this batch carries more of them.
                await anyio.sleep(window)
                self._drain(batch)
            window = self._window if len(batch) > 1 else 0.0
            self._busy += 1
            self._idle = anyio.Event() if self._idle.is_set() else self._idle
            try:
                await self._submit_batch(batch)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    def _drain(self, batch: list[SubmitRequest], limit: float | None = None) -> None:
        while len(batch) < (self._max_batch if limit is None else limit):
            try:
                batch.extend(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return

    def _jobs(self, batch: Sequence[SubmitRequest]) -> Iterator[Job]:
        """Group the batch: calls sharing a function, a JobSpec and their dependencies become array jobs."""
        return group_jobs(batch, max_array_size=self._max_array_size, new_token=new_token)

    async def _submit_batch(self, batch: Sequence[SubmitRequest]) -> None:
        self.batches += 1
        jobs = list(self._jobs(batch))
        # Under an RPC budget, no command carries more sbatch calls than the bucket holds.
        step = self._budget.burst if self._budget is not None else max(1, len(jobs))
        try:
            await self._upload_shared_files(jobs)
            for start in range(0, len(jobs), step):
                await self._sbatch(jobs[start : start + step])
        except BaseException as exc:
            fail(batch, exc if isinstance(exc, Exception) else closed_error(under_way=True))
            if not isinstance(exc, Exception):
                raise

    async def _sbatch(self, jobs: Sequence[Job]) -> None:
        """Write the jobs' files and run their sbatch calls in one round trip; report to each request.

        Exactly once: the command is fenced (see :func:`~slurmbatch.slurm.batch.fenced_script`). If the
        connection drops under it, a recovery command on a new connection learns what it did (its
        replies, or that it never started and never will), and only jobs it did not submit are sent again.
        """
        if self._budget is not None:
            await self._budget.acquire(len(jobs))
        files = self._files(jobs)
        # An array's packed argument table may be megabytes: it travels by SFTP, not in the script on
        # bash's standard input (bash reads a script a byte per system call).
        tables = {
            self._layout.arguments(j.token): files.pop(self._layout.arguments(j.token))
            for j in jobs
            if j.array
        }
        if tables:
            await self._uploads.tables(tables)
        outage = Outage(self._reconnect_deadline)
        controller_down = Outage(self._reconnect_deadline)
        pending = list(jobs)
        while pending:
            if self._closed:  # the session is ending: a batch not sent yet is not sent at all
                raise closed_error()
            fence = self._layout.fence(new_token())
            stale, self.finished_fences = self.finished_fences, []
            body = write_files_script(
                {p: files[p] for j in pending for p in self._job_files(j) if p in files}
            )
            if stale:
                body += "\nrm -rf -- " + " ".join(shlex.quote(f) for f in stale)
            body += "\n" + self._slurm_setup
            body += batch_sbatch_command(
                [(j.token, self._layout.script(j.token)) for j in pending], fence=fence
            )
            if self._journal is not None:
                # Before the batch may run: a process killed from here on leaves its jobs findable.
                await self._journal.submitting(
                    (token, fence, job.requests[0].function.source_file)
                    for job in pending
                    for token in self._request_tokens(job)
                )
            # Listed until its reply is known: if a cancellation cuts it short, the session claims the fence.
            self._interrupted[fence] = list(pending)
            try:
                result = await self._run_fenced(body, fence, stale, outage, len(pending))
            except Exception:
                del self._interrupted[fence]
                raise
            del self._interrupted[fence]
            if isinstance(result, tuple):  # the connection dropped under it: the recovery's answer
                replies, complete = result
                if replies is None:
                    continue  # it never ran, and never will: send the same jobs again
                self.finished_fences.append(fence)
                await self._report(
                    pending,
                    replies,
                    "no answer"
                    if complete
                    else "the submission was interrupted on the login node before sbatch answered; look "
                    "for the job's token in squeue's comment field (squeue --me -O JobID,Comment) before "
                    "submitting it again",
                )
                return
            outage.over()
            self.finished_fences.append(fence)
            replies = parse_batch_sbatch(result.stdout)
            pending, lost = await self._find_lost_answers(pending, replies)
            pending, unanswered = self._unanswered(pending, replies, controller_down)
            await self._report(pending, replies, result.stderr.strip())
            pending = unanswered + lost
            if pending:
                await anyio.sleep(min(5.0, 0.5 * 2.0 ** min(controller_down.losses, 4)))

    async def _find_lost_answers(
        self, jobs: list[Job], replies: dict[str, SbatchReply]
    ) -> tuple[list[Job], list[Job]]:
        """Look up, by their tokens, the jobs whose sbatch failed in a way that may have submitted them
        ("Socket timed out on send/recv operation": slurmctld took the request, its answer was lost).

        Jobs found get their ids in ``replies``; jobs the scheduler still does not know after a few
        looks (slurmctld may be slow to process a request) are returned to be sent again. If the
        scheduler cannot be asked at all, the jobs are reported failed with a warning, never sent twice.
        """
        lost = {j.token for j in jobs if (r := replies.get(j.token)) is not None and r.maybe_submitted}
        if not lost:
            return jobs, []
        logger.warning("sbatch lost its answer for %d job(s); looking them up by their tokens", len(lost))
        found, looked = await look_up_tokens(self._pool, self._slurm_setup, lost)
        for token, job_id in found.items():
            replies[token] = SbatchReply(token, 0, job_id)
        if not looked:
            for token in lost - set(found):
                said = replies[token].output
                replies[token] = SbatchReply(
                    token,
                    replies[token].exit_status,
                    f"{said} (the job may have been submitted all the same, and the scheduler could not be "
                    f"asked; look for comment {token} in squeue --me -O JobID,Comment before submitting it "
                    "again)",
                )
            return jobs, []
        again = [j for j in jobs if j.token in lost and j.token not in found]
        return [j for j in jobs if j not in again], again

    async def _run_fenced(
        self, body: str, fence: str, stale: list[str], outage: Outage, jobs: int
    ) -> CommandResult | tuple[dict[str, SbatchReply] | None, bool]:
        """Run the fenced batch; if the connection drops under it, what :meth:`recover` learns instead."""
        try:
            return await self._pool.script(
                fenced_script(body, fence), shell="bash", what=f"submitting {jobs} job(s)"
            )
        except ConnectionLost as error:
            self.finished_fences += stale
            await anyio.sleep(outage.lost(error, f"submitting {jobs} job(s)"))
            return await self.recover(fence)

    def _unanswered(
        self, jobs: list[Job], replies: dict[str, SbatchReply], controller_down: Outage
    ) -> tuple[list[Job], list[Job]]:
        """Split ``jobs`` into those sbatch answered and those to send again because slurmctld did not
        answer (it may be restarting), until the outage passes the deadline."""
        again = [j for j in jobs if (r := replies.get(j.token)) is not None and r.controller_unreachable]
        if not again:
            controller_down.over()
            return jobs, []
        if not controller_down.failed():
            return jobs, []  # reported with sbatch's own words
        logger.warning("slurmctld did not answer %d sbatch call(s); sending them again", len(again))
        return [j for j in jobs if j not in again], again

    async def recover(self, fence: str) -> tuple[dict[str, SbatchReply] | None, bool]:
        """What the fenced batch did: None if it never started, else its replies and whether it ended."""
        what = "finding out which jobs a dropped submission submitted"
        result = await retry_lost(
            lambda: self._pool.script(fence_recovery_command(fence), what=what),
            deadline=self._reconnect_deadline,
            what=what,
        )
        if not result.ok:
            raise SubmissionError(
                f"{what} failed on the login node: {result.stderr.strip() or result.stdout.strip()}"
            )
        if NOT_STARTED in result.stdout:
            return None, False
        return parse_batch_sbatch(result.stdout), UNFINISHED not in result.stdout

    async def _report(self, jobs: Sequence[Job], replies: dict[str, SbatchReply], stderr: str) -> None:
        self.sbatch_calls += len(jobs)
        logger.info(
            "submitted %d call(s) as %d job(s) in one command", sum(len(j.requests) for j in jobs), len(jobs)
        )
        settle(jobs, replies, stderr, on_submitted=self._on_submitted)
        try:
            if self._journal is not None:
                await record_in_journal(self._journal, jobs)
        finally:
            release_callers(jobs)

    @staticmethod
    def _request_tokens(job: Job) -> list[str]:
        return request_tokens(job)

    def _job_files(self, job: Job) -> tuple[str, str]:
        return self._layout.arguments(job.token), self._layout.script(job.token)

    def _files(self, jobs: Sequence[Job]) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for job in jobs:
            first = job.requests[0]
            if job.array is None:
                files[self._layout.arguments(job.token)] = first.call.data
            else:
                files[self._layout.arguments(job.token)] = pack_argument_table(
                    [r.call.data for r in job.requests]
                )
            files[self._layout.script(job.token)] = self._render(
                first.spec, first.function, job.token, job.array, job.dependency
            ).encode()
        return files

    async def _upload_shared_files(self, jobs: Sequence[Job]) -> None:
        """Upload the content-addressed files (functions, large arguments) the jobs need and lack."""
        shared: dict[str, bytes] = {}
        for job in jobs:
            for request in job.requests:
                shared.setdefault(request.function.digest, request.function.data)
                shared.update(request.call.blobs)
        await self._uploads.shared_files(shared)
