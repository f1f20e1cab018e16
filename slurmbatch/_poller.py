"""One status loop for all jobs of a session: results pushed by a watcher, the scheduler asked rarely.

Finished jobs are noticed by their result files. A `ResultWatcher` on the login node streams the names
of new files in W/results; each batch (one listing's news) is fetched at once over one SFTP session, and
its futures resolved. No scheduler RPC is involved.

The scheduler is asked only about jobs that may have ended without a result (timeout, out of memory,
node failure, cancellation): ONE ``squeue`` for every such live job of the session, every
``status_interval`` (adaptive: short after new work or a cancel, growing while nothing changes). Jobs
that squeue no longer knows (purged after MinJobAge) are looked up with one ``sacct`` (slurmdbd, or the
job completion file without it). A job the scheduler calls ended gets a short grace (network file
systems lag), then its result file and stderr are read directly: a result found wins, else the job
fails with its end state.

While the watcher is down (its channel died; it is restarted with backoff), the loop falls back to
listing W/results itself every ``check_interval``, and asks the scheduler at once: nothing that ended in
the gap is missed, and the restarted watcher's first listing names every result file present. It
does so all the time in a pool of a single channel, which the watcher would hold for good. After
``watch_idle`` seconds without live jobs the watcher is paused, and resumed by the next job.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus

from ._errors import JobFailed, JobOutOfMemory, RemoteEnvironmentError, SubmissionError
from ._journal import Journal
from ._remote_layout import RemoteLayout
from ._watcher import ResultWatcher
from .future import JobFuture
from .payload import unpack_outcome
from .rpc_budget import TokenBucket
from .slurm.commands import sacct_argv, squeue_argv
from .slurm.parse import parse_sacct, parse_squeue
from .slurm.states import NEVER_STARTS, JobState, JobStatus, failure_for
from .transport import SSHPool

logger = logging.getLogger("slurmbatch")

__all__ = ["Poller"]

_MARK = "@@slurmbatch-listing@@"
# Printed when squeue or sacct failed (e.g. slurmctld restarting): their silence then means nothing.
_NO_ANSWER = "@@slurmbatch-no-answer@@"
_STDERR_TAIL_LINES = 20
_STDERR_TAIL_BYTES = 16 * 1024  # read for those lines; a longer last line is cut at its start
_ENDED_GRACE = 0.5  # seconds a job the scheduler calls ended may take to show its result file


@attrs.define
class _Ended:
    """A job the scheduler called ended while no result file of it was known."""

    status: JobStatus
    settle_at: float
    seen: int = 1  # status queries in a row that called it ended


class Poller:
    """Tracks live :class:`JobFuture` objects and resolves them; see the module docstring.

    Args:
        pool: The session's SSH pool.
        layout: Where the session's files are.
        accounting: Whether ``sacct`` reads slurmdbd (else the job completion file, ``sacct -c``).
        check_interval: Shortest and longest seconds between the loop's own listings of W/results,
            made only while the watcher is down.
        status_interval: Shortest and longest seconds between scheduler queries.
        watch_interval: Seconds between the watcher's listings on the login node.
        watch_idle: Seconds without any live job after which the watcher is paused (its program
            stopped) until the next job is tracked.
        budget: The session's RPC budget, if any: a status query over budget is postponed, not sent.
        slurm_setup: Shell lines (each ending in a newline) run before the scheduler is asked.
        restore_workdir: Recreates the remote work directory once the watcher finds it gone.
        journal: Where resolved jobs are noted (written before their result files are removed).
        cancel: Cancels jobs the way the session does (``scancel``, within its RPC budget): pending jobs
            that can never start are cancelled.
    """

    def __init__(
        self,
        pool: SSHPool,
        layout: RemoteLayout,
        *,
        accounting: bool,
        check_interval: tuple[float, float] = (0.1, 1.0),
        status_interval: tuple[float, float] = (2.0, 30.0),
        watch_interval: float = 0.1,
        watch_idle: float = 30.0,
        budget: TokenBucket | None = None,
        slurm_setup: str = "",
        restore_workdir: Callable[[], Awaitable[None]] | None = None,
        journal: Journal | None = None,
        cancel: Callable[[list[JobFuture[Any]]], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._accounting = accounting
        self._budget = budget
        self._slurm_setup = slurm_setup
        self._restore_workdir = restore_workdir
        self._journal = journal
        self._cancel = cancel
        # Pending jobs squeue says will never start (e.g. over their partition's time limit), by token.
        self._never_start: dict[str, JobStatus] = {}
        # Tokens of jobs that were live when the work directory was found removed: their files are gone.
        self._files_lost: set[str] = set()
        self._check_min, self._check_max = check_interval
        self._status_min, self._status_max = status_interval
        self._live: dict[str, JobFuture[Any]] = {}  # by token
        self._by_job_id: dict[str, JobFuture[Any]] = {}
        # Tokens whose result file is in W/results as far as we know, tracked or not (a job may finish
        # before sbatch's answer reaches us, and other sessions may share the directory).
        self._present: set[str] = set()
        self._ready: set[str] = set()  # live tokens in _present: to collect now
        self._ended: dict[str, _Ended] = {}  # by token
        self._vanished: set[str] = set()  # job ids squeue no longer knows
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._progress = anyio.Event()
        self._status_due = 0.0
        self._status_wait = self._status_min
        self._check_wait = self._check_min
        self._listing_due = 0.0
        # The watcher holds a channel for the session's life: in a pool of one channel it would leave
        # none for anything else, so there the loop lists W/results itself instead.
        self._watching = pool.capacity > 1
        self._fallback = not self._watching  # list W/results ourselves whenever the watcher is not up
        self._watch_idle = watch_idle
        self.watcher = ResultWatcher(
            pool,
            layout.results_dir,
            on_listing=self._on_listing,
            on_down=self._on_watcher_down,
            on_missing=self._workdir_missing,
            interval=watch_interval,
        )
        #: Status queries sent to the scheduler (each one ``squeue`` and/or ``sacct`` call).
        self.scheduler_queries = 0
        #: Listings of W/results made by the loop itself (only while the watcher is down).
        self.ticks = 0
        #: Batches of results fetched.
        self.collections = 0
        #: When a remote command of the loop last succeeded (anyio clock).
        self.last_success = 0.0
        #: When the scheduler last answered a status query (anyio clock).
        self.last_answer = 0.0

    # ----------------------------------------------------------------------------------- tracking
    def track(self, future: JobFuture[Any]) -> None:
        """Start watching ``future``'s job."""
        self._live[future.token] = future
        self._by_job_id[future.job_id] = future
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        if future.token in self._present:
            self._ready.add(future.token)  # it finished before we learnt its job id
        self.watcher.resume()
        # New work: ask the scheduler at the short interval again.
        self._status_wait = self._status_min
        self._check_wait = self._check_min
        self._wakeup.set()

    def request_status(self) -> None:
        """Ask the scheduler at once (e.g. right after a cancel)."""
        self._status_due = 0.0
        self._wakeup.set()

    def live(self) -> list[JobFuture[Any]]:
        """Futures of jobs not finished yet."""
        return list(self._live.values())

    def progress_event(self) -> anyio.Event:
        """An event set the next time any tracked job finishes."""
        return self._progress

    async def wait_idle(self) -> None:
        """Wait until every tracked job has finished."""
        await self._idle.wait()

    def fail_all(self, exc: BaseException) -> None:
        """Resolve every live future with ``exc`` (the session can no longer learn their outcome)."""
        for future in list(self._live.values()):
            self.resolve(future, exc=exc)

    def resolve(
        self,
        future: JobFuture[Any],
        *,
        value: Any = None,
        exc: BaseException | None = None,
        state: JobState | None = None,
        collected: bool = True,
    ) -> None:
        """Resolve ``future`` with a value or an exception, and stop tracking it.

        ``collected=False``: its outcome is not known (the session gave up following the job), so the
        journal keeps it for a later reattach.
        """
        if exc is None:
            future._set_result(value)
        else:
            future._set_exception(exc, state)
        self._live.pop(future.token, None)
        self._by_job_id.pop(future.job_id, None)
        self._ready.discard(future.token)
        self._ended.pop(future.token, None)
        self._files_lost.discard(future.token)
        self._vanished.discard(future.job_id)
        if self._journal is not None and collected:
            self._journal.finished(future.token, future.state.name)
        if not self._live:
            self._idle.set()
        self._progress.set()
        self._progress = anyio.Event()

    # ----------------------------------------------------------------------------------- watcher news
    def _on_listing(self, appeared: list[str], gone: list[str], complete: bool) -> None:
        tokens = {t for name in appeared if (t := RemoteLayout.token_of_result(name)) is not None}
        if complete:
            self._present = tokens
            self._ready = {t for t in tokens if t in self._live}
        else:
            self._present |= tokens
            self._ready |= {t for t in tokens if t in self._live}
        for name in gone:
            token = RemoteLayout.token_of_result(name)
            self._present.discard(token or "")
            self._ready.discard(token or "")
        if self._ready:
            self._wakeup.set()

    async def _workdir_missing(self) -> None:
        logger.error(
            "the remote work directory %s was removed; %d live job(s) lost their files; recreating it",
            self._layout.workdir,
            len(self._live),
        )
        self._files_lost |= set(self._live)
        if self._restore_workdir is not None:
            await self._restore_workdir()

    def _on_watcher_down(self) -> None:
        # Cover the gap: ask the scheduler, and list W/results ourselves until the watcher is back.
        self._fallback = True
        if self._live:
            self._status_due = 0.0
        self._listing_due = 0.0
        self._check_wait = self._check_min
        self._wakeup.set()

    # ----------------------------------------------------------------------------------- loop
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch and poll until cancelled.

        The watcher starts at once, before any job is tracked: its first listing names every result
        file present, so a job that finishes while it starts is not missed.
        """
        async with anyio.create_task_group() as tg:
            if self._watching:
                await tg.start(self.watcher.run)
            task_status.started()
            while True:
                await self._step()

    async def _step(self) -> None:
        """Do whatever is due, in order of urgency, then wait until something new is due."""
        # A fresh event before looking: news arriving while we look is not lost.
        self._wakeup = anyio.Event()
        if not self._live:
            await self._idle_until_tracked()
            return
        if self._ready:
            await self._collect([self._live[t] for t in self._ready])
        # Checked after collecting, not instead of it: a steady stream of results never starves them.
        now = anyio.current_time()
        fallback = self._fallback and not self.watcher.up
        listing = fallback and now >= self._listing_due
        if listing or now >= self._status_due:
            await self._query(listing=listing, status=now >= self._status_due)
        now = anyio.current_time()
        if any(e.settle_at <= now for e in self._ended.values()):
            await self._settle_ended(now)
        if self._ready or not self._live:
            return
        now = anyio.current_time()
        fallback = self._fallback and not self.watcher.up
        due = min(
            [
                self._status_due,
                *(e.settle_at for e in self._ended.values()),
                self._listing_due if fallback else math.inf,
            ]
        )
        with anyio.move_on_after(due - now):
            await self._wakeup.wait()

    async def _idle_until_tracked(self) -> None:
        idle_until = anyio.current_time() + self._watch_idle
        while not self._live and anyio.current_time() < idle_until:
            self._wakeup = anyio.Event()
            with anyio.move_on_after(idle_until - anyio.current_time()):
                await self._wakeup.wait()
        if self._live:
            return
        # Nothing to watch: stop listing W/results on the login node. The first listing after track()
        # resumes the watcher is complete, so a job that finished meanwhile is not missed.
        self.watcher.pause()
        self._fallback = not self._watching
        while not self._live:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    async def _query(self, *, listing: bool, status: bool) -> None:
        """One remote command: a scheduler query, a listing of W/results, or both."""
        now = anyio.current_time()
        parts: list[str] = []
        asked: set[str] = set()
        if status:
            asked = {f.job_id for f in self._live.values() if f.token not in self._present}
            command, rpcs = self._status_command(asked) if asked else ("", 0)
            over_budget = (
                self._budget.try_take(min(rpcs, self._budget.burst)) if rpcs and self._budget else 0.0
            )
            if over_budget:
                # Ask once the bucket has refilled; results keep being collected meanwhile.
                asked = set()
                self._status_due = now + over_budget
            else:
                self._status_due = now + self._status_wait
                self._status_wait = min(self._status_wait * 1.5, self._status_max)
            if asked:
                # Scheduler first, listing second: a job squeue calls ended has written its result before.
                parts.append(command)
                self.scheduler_queries += 1
        if listing:
            self.ticks += 1
            parts.append(f"echo {_MARK}; ls -1 {shlex.quote(self._layout.results_dir)}")
        if not parts:
            return
        output = (await self._pool.run("; ".join(parts))).stdout
        self.last_success = anyio.current_time()
        status_text, _, names = output.partition(f"{_MARK}\n")
        if listing:
            if not self.watcher.up:  # else it came back meanwhile, and its view is newer than ours
                self._on_listing(names.split(), [], True)
            self._check_wait = (
                self._check_min if self._ready else min(self._check_wait * 1.5, self._check_max)
            )
            self._listing_due = anyio.current_time() + self._check_wait
        if asked and _NO_ANSWER in status_text:
            # The scheduler did not answer: ask again soon, and conclude nothing from its silence.
            logger.info("the scheduler did not answer a status query; asking again shortly")
            self._status_due = anyio.current_time() + self._status_min
        elif asked:
            self.last_answer = anyio.current_time()
            # Only jobs that were live when the command was built: newer ones were not asked about.
            self._apply_statuses(self._parse_status(status_text), asked)
            if self._never_start:
                await self._cancel_never_starting()

    def _status_command(self, job_ids: set[str]) -> tuple[str, int]:
        """The shell command that asks the scheduler about ``job_ids``, and the RPCs it costs."""
        # Arrays by their own id: squeue then lists their running tasks and their pending ones as ranges,
        # a few lines for thousands of tasks.
        ids = sorted({job_id.split("_", 1)[0] for job_id in job_ids - self._vanished})
        vanished = sorted(job_ids & self._vanished)
        parts = []
        if ids:
            # squeue fails both when the controller does not answer and, asked about one id only, when
            # that job was purged: only the former leaves the jobs' fate unknown.
            squeue = shlex.join(squeue_argv(ids))
            parts.append(
                f"{{ sq_err=$({squeue} 2>&1 >&3); sq_rc=$?; }} 3>&1; [ $sq_rc = 0 ] || "
                f'case "$sq_err" in *"Invalid job id"*) ;; *) echo {_NO_ANSWER} ;; esac'
            )
        if vanished:
            sacct = shlex.join(sacct_argv(vanished, jobcomp=not self._accounting))
            parts.append(f"echo @@sacct; {sacct} 2>/dev/null || echo {_NO_ANSWER}")
        return self._slurm_setup + "; ".join(parts), len(parts)

    async def _cancel_never_starting(self) -> None:
        """Cancel pending jobs that can never start, and fail their futures saying why."""
        doomed = [(self._live[t], s) for t, s in self._never_start.items() if t in self._live]
        self._never_start.clear()
        if not doomed:
            return
        try:
            await self._cancel([future for future, _ in doomed])
        except SubmissionError as exc:  # e.g. gone meanwhile: they are failed below all the same
            logger.warning("could not cancel %d job(s) that can never start: %s", len(doomed), exc)
        for future, status in doomed:
            hint = NEVER_STARTS[status.reason]
            self.resolve(
                future,
                exc=SubmissionError(
                    f"Slurm accepted job {future.job_id} but will never start it ({status.reason}), so it was "
                    f"cancelled. {hint}"
                ),
                state=JobState.CANCELLED,
            )

    def _parse_status(self, text: str) -> dict[str, JobStatus]:
        squeue_text, _, sacct_text = text.partition("@@sacct\n")
        statuses = parse_squeue(squeue_text)
        if sacct_text:
            statuses.update({k: v for k, v in parse_sacct(sacct_text).items() if k in self._vanished})
        return statuses

    def _apply_statuses(self, statuses: dict[str, JobStatus], asked: set[str]) -> None:
        settle_at = anyio.current_time() + _ENDED_GRACE
        for job_id in asked:
            future = self._by_job_id.get(job_id)
            if future is None or future.token in self._present:
                continue  # resolved meanwhile, or its result is on its way
            status = statuses.get(job_id)
            if status is None:
                if job_id in self._vanished:
                    self._note_ended(future, _forgotten(future), settle_at)
                else:
                    self._vanished.add(job_id)
                    self._status_due = 0.0  # ask sacct right away
                continue
            self._vanished.discard(job_id)
            if status.never_starts:
                self._never_start[future.token] = status
            if status.state != future.state:
                logger.debug("job %s: %s -> %s", job_id, future.state.name, status.state.name)
            future._set_state(status.state)
            if status.is_terminal:
                self._note_ended(future, status, settle_at)
            else:
                self._ended.pop(future.token, None)  # requeued

    def _note_ended(self, future: JobFuture[Any], status: JobStatus, settle_at: float) -> None:
        ended = self._ended.get(future.token)
        if ended is None:
            self._ended[future.token] = _Ended(status, settle_at)
        else:
            ended.seen += 1
            ended.status = status

    # ----------------------------------------------------------------------------------- outcomes
    async def _collect(self, finished: list[JobFuture[Any]]) -> None:
        """Fetch the results of ``finished`` over one SFTP session, resolve them, then remove the files."""
        self.collections += 1
        paths = {self._layout.result(f.token): f for f in finished}
        async with self._pool.sftp() as sftp:
            contents = await sftp.get_many(paths)
            self._ready.difference_update(f.token for f in finished)
            collected = self._resolve_results(paths, contents)
            if self._journal is not None:
                await self._journal.flush()  # collected for good before the files go
            # Removed once resolved, not before: keeps W/results as short as the number of live jobs.
            await sftp.remove_many(collected)
        for path, future in paths.items():
            if path not in collected and not future.done():
                # Listed, but gone before we read it: let the scheduler tell how the job ended.
                self._present.discard(future.token)
        logger.info("collected %d result(s)", len(collected))

    def _resolve_results(
        self, paths: dict[str, JobFuture[Any]], contents: dict[str, bytes | None]
    ) -> list[str]:
        """Resolve each future whose result file was read; return those files."""
        collected = []
        for path, future in paths.items():
            data = contents.get(path)
            if data is None or future.done():
                continue
            try:
                value = unpack_outcome(data, job_id=future.job_id, source_file=future._source_file)
            except RemoteEnvironmentError as exc:
                failure: Exception = exc
                if future.token in self._files_lost:  # e.g. its arguments file was gone when it started
                    failure = self._files_lost_error(future, JobStatus(JobState.FAILED), str(exc))
                    failure.__cause__ = exc
                self.resolve(future, exc=failure, state=JobState.FAILED)
            except Exception as exc:
                self.resolve(future, exc=exc, state=JobState.FAILED)
            else:
                self.resolve(future, value=value)
            collected.append(path)
        return collected

    async def _settle_ended(self, now: float) -> None:
        """Resolve jobs the scheduler called ended a grace period ago: by their result if one has
        appeared since, else with their end state and the tail of their stderr."""
        due = [
            (self._live[token], ended)
            for token, ended in self._ended.items()
            if ended.settle_at <= now and token in self._live
        ]
        for future, _ in due:
            self._ended.pop(future.token, None)
        if not due:
            return
        results = {self._layout.result(f.token): f for f, _ in due}
        stderrs = {self._layout.stderr(f.token): f.token for f, _ in due}
        async with self._pool.sftp() as sftp:
            try:
                contents = await sftp.get_many(results)
                # Only the end of each stderr, read from its offset: a job may have logged gigabytes.
                contents.update(await sftp.get_many(stderrs, tail=_STDERR_TAIL_BYTES))
            except OSError:  # e.g. a file we may not read: the end state alone must do
                contents = {}
            collected = self._resolve_results(results, contents)
            if self._journal is not None:
                await self._journal.flush()
            await sftp.remove_many(collected)
        tails = {
            stderrs[path]: "\n".join(data.decode(errors="replace").splitlines()[-_STDERR_TAIL_LINES:])
            for path, data in contents.items()
            if path in stderrs and data
        }
        unconfirmed = [(f, e) for f, e in due if not f.done() and e.seen < 2]
        if unconfirmed:
            # Called ended once, and no result: ask once more before failing it. A job being requeued
            # (by an administrator, preemption or a node failure) may look ended for a moment.
            self._status_due = 0.0
            for future, ended in unconfirmed:
                self._ended[future.token] = attrs.evolve(ended, settle_at=now + _ENDED_GRACE)
        self._fail_ended([(f, e.status) for f, e in due if not f.done() and e.seen >= 2], tails)

    def _files_lost_error(self, future: JobFuture[Any], status: JobStatus, detail: str) -> JobFailed:
        return _ended_without_result(
            future,
            status,
            f"a result: the remote work directory {self._layout.workdir} was removed while the job was "
            "queued or running, and its files with it. The session has recreated the directory; submit the "
            "job again.",
            detail,
        )

    def _fail_ended(self, ended: Iterable[tuple[JobFuture[Any], JobStatus]], tails: dict[str, str]) -> None:
        for future, status in ended:
            tail = tails.get(future.token, "")
            if future.token in self._files_lost:
                exc: JobFailed = self._files_lost_error(future, status, tail)
            elif status.state is JobState.COMPLETED or status.state is JobState.UNKNOWN:
                exc = _ended_without_result(
                    future,
                    status,
                    "writing a result: the job script failed before or after the function ran (see its stderr).",
                    tail,
                )
            else:
                exc = failure_for(status, job_id=future.job_id, stderr_tail=tail)
            self.resolve(
                future,
                exc=exc,
                state=JobState.OUT_OF_MEMORY if isinstance(exc, JobOutOfMemory) else status.state,
            )


def _ended_without_result(future: JobFuture[Any], status: JobStatus, why: str, tail: str) -> JobFailed:
    """``JobFailed``: job ``future`` ended in ``status`` without ``why``."""
    return JobFailed(
        f"Job {future.job_id} ended ({status.raw_state or status.state.name}) without {why}",
        job_id=future.job_id,
        state=status.state.name,
        exit_code=status.exit_code,
        signal=status.signal,
        stderr_tail=tail,
    )


def _forgotten(future: JobFuture[Any]) -> JobStatus:
    """How a job ended that neither squeue nor sacct knows."""
    if "_" in future.job_id and future.state is JobState.PENDING:
        # Slurm keeps the pending tasks of an array in one record; scancel of one of them just drops
        # it from that record, and no job completion record is ever written for it.
        return JobStatus(JobState.CANCELLED, raw_state="CANCELLED (removed from its array while pending)")
    return JobStatus(JobState.UNKNOWN, raw_state="unknown to squeue and sacct")
