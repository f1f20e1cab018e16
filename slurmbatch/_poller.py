"""One status loop for all jobs of a session: results pushed by a watcher, the scheduler asked rarely.

Finished jobs are noticed by their result files. A `ResultWatcher` on the login node streams the names
of new files in W/results; each batch (one listing's news) is fetched at once over one SFTP session, and
its futures resolved. No scheduler RPC is involved.

The scheduler is asked only about jobs that may have ended without a result (timeout, out of memory,
node failure, cancellation), by a :class:`~slurmbatch._scheduler_queries.SchedulerQueries` in a task of its own, so
that a slow scheduler never holds back a result. A job the scheduler calls ended gets a short grace
(network file systems lag), then its result file and stderr are read directly: a result found wins,
else the job fails with its end state.

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
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus

from ._dependencies import Dependencies
from ._errors import JobCancelled, SubmissionError
from ._journal import Journal
from ._outcomes import Ended, forgotten_status
from ._reconnect import one_connect_error
from ._remote_layout import RemoteLayout
from ._result_files import ResultFiles
from ._scheduler_queries import SchedulerQueries, never_start_message
from ._watcher import ResultWatcher
from .future import JobFuture
from .rpc_budget import TokenBucket
from .slurm.states import JobState, JobStatus
from .transport import Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["Poller"]

_ENDED_GRACE = 0.5
# seconds a job the scheduler calls ended may take to show its result file


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
        dependencies: The session's jobs that take other jobs' values: told of each resolved job,
            asked whether a job's files must stay, and for the error of a job whose upstream failed.
    """

    def __init__(
        self,
        pool: Transport,
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
        dependencies: Dependencies | None = None,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._accounting = accounting
        self._budget = budget
        self._slurm_setup = slurm_setup
        self._restore_workdir = restore_workdir
        self._journal = journal
        self._cancel = cancel
        self._dependencies = dependencies
        # Tokens of jobs that were live when the work directory was found removed: their files are gone.
        self._files_lost: set[str] = set()
        self._check_min, self._check_max = check_interval
        self._live: dict[str, JobFuture[Any]] = {}  # by token
        self._by_job_id: dict[str, JobFuture[Any]] = {}
        # Tokens whose result file is in W/results as far as we know, tracked or not (a job may finish
        # before sbatch's answer reaches us, and other sessions may share the directory).
        self._present: set[str] = set()
        self._ready: set[str] = set()  # live tokens in _present: to collect now
        self._ended: dict[str, Ended] = {}  # by token
        # Tokens of futures whose job ended and whose call is being submitted again (see _retries).
        self._retrying: set[str] = set()
        #: Decides whether a failed job is submitted again (and starts that), see :meth:`resolve`.
        self.retry: Callable[[JobFuture[Any], BaseException], bool] | None = None
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._progress = anyio.Event()
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
        self._files = ResultFiles(
            pool,
            layout,
            journal=journal,
            resolve=self.resolve,
            files_lost=self._files_lost,
            held=dependencies.held if dependencies is not None else lambda token: False,
        )
        #: The scheduler queries, in a task of their own.
        self.status = SchedulerQueries(
            pool,
            accounting=accounting,
            interval=status_interval,
            budget=budget,
            slurm_setup=slurm_setup,
            candidates=self._candidates,
            report=self._on_status,
            forgotten=lambda future: self._note_ended(future, forgotten_status(future)),
            never_start=self._cancel_never_starting,
            answered=self._on_answer,
        )
        #: Listings of W/results made by the loop itself (only while the watcher is down).
        self.ticks = 0
        #: Batches of results fetched.
        self.collections = 0
        #: When a remote command of the loop last succeeded (anyio clock).
        self.last_success = 0.0

    @property
    def scheduler_queries(self) -> int:
        """Status queries sent to the scheduler (each one remote command)."""
        return self.status.queries

    @property
    def last_answer(self) -> float:
        """When the scheduler last answered a status query (anyio clock)."""
        return self.status.last_answer

    # ----------------------------------------------------------------------------------- tracking
    def track(self, future: JobFuture[Any]) -> None:
        """Start watching ``future``'s job."""
        self._live[future.token] = future
        self._by_job_id[future.job_id] = future
        self._retrying.discard(future.token)
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        if future.token in self._present:
            self._ready.add(future.token)  # it finished before we learnt its job id
        self.watcher.resume()
        # New work: ask the scheduler at the short interval again.
        self.status.new_work()
        self._check_wait = self._check_min
        self._wakeup.set()

    def request_status(self) -> None:
        """Ask the scheduler at once (e.g. right after a cancel)."""
        self.status.request()

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

        A failure its spec retries is not resolved: the job stops being tracked, and the future waits
        for its next attempt (tracked again by :meth:`track`, or resolved by :meth:`give_up_retry`).
        """
        retried = exc is not None and collected and self.retry is not None and self.retry(future, exc)
        if retried:
            self._retrying.add(future.token)
            future._set_state(JobState.PENDING)
        elif exc is None:
            future._set_result(value)
        else:
            future._set_exception(exc, state)
        self._live.pop(future.token, None)
        self._by_job_id.pop(future.job_id, None)
        self._ready.discard(future.token)
        self._ended.pop(future.token, None)
        self._files_lost.discard(future.token)
        self.status.forget(future)
        if retried:
            return
        if self._journal is not None and collected:
            self._journal.finished(future.token, future.state.name)
        if self._dependencies is not None:
            self._dependencies.resolved(future, outcome_known=collected)
        if not self._live and not self._retrying:
            self._idle.set()
        self._progress.set()
        self._progress = anyio.Event()

    def give_up_retry(self, future: JobFuture[Any], exc: BaseException) -> None:
        """Resolve ``future``, whose next attempt could not be submitted, with ``exc``."""
        self._retrying.discard(future.token)
        state = JobState.CANCELLED if isinstance(exc, JobCancelled) else JobState.FAILED
        self.resolve(future, exc=exc, state=state)

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
        self._files_lost.update(self._live)  # in place: shared with the result files reader
        if self._restore_workdir is not None:
            await self._restore_workdir()

    def _on_watcher_down(self) -> None:
        # Cover the gap: ask the scheduler, and list W/results ourselves until the watcher is back.
        self._fallback = True
        if self._live:
            self.status.request()
        self._listing_due = 0.0
        self._check_wait = self._check_min
        self._wakeup.set()

    # ----------------------------------------------------------------------------------- loop
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch and poll until cancelled.

        The watcher starts at once, before any job is tracked: its first listing names every result
        file present, so a job that finishes while it starts is not missed.
        """
        try:
            async with anyio.create_task_group() as tg:
                if self._watching:
                    await tg.start(self.watcher.run)
                tg.start_soon(self.status.run)
                task_status.started()
                while True:
                    await self._step()
        except Exception as raised:
            error = one_connect_error(raised)
            if error is raised:
                raise
            raise error from raised

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
        if fallback and now >= self._listing_due:
            await self._list_results()
        now = anyio.current_time()
        if any(e.settle_at <= now for e in self._ended.values()):
            await self._settle_ended(now)
        if self._ready or not self._live:
            return
        now = anyio.current_time()
        fallback = self._fallback and not self.watcher.up
        due = min([*(e.settle_at for e in self._ended.values()), self._listing_due if fallback else math.inf])
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

    async def _list_results(self) -> None:
        """List W/results ourselves (while the watcher is down)."""
        self.ticks += 1
        result = await self._pool.script(
            f"ls -1 {shlex.quote(self._layout.results_dir)}", what="listing the results directory"
        )
        if result.ok:
            self.last_success = anyio.current_time()
            if not self.watcher.up:  # else it came back meanwhile, and its view is newer than ours
                self._on_listing(result.stdout.split(), [], True)
        self._check_wait = self._check_min if self._ready else min(self._check_wait * 1.5, self._check_max)
        self._listing_due = anyio.current_time() + self._check_wait

    # ----------------------------------------------------------------------------------- scheduler news
    def _candidates(self) -> dict[str, JobFuture[Any]]:
        """Live jobs the scheduler is to be asked about: those whose result file is not known yet."""
        return {f.job_id: f for f in self._live.values() if f.token not in self._present}

    def _on_answer(self, reached: bool) -> None:
        if reached:
            self.last_success = anyio.current_time()

    def _on_status(self, future: JobFuture[Any], status: JobStatus) -> None:
        if status.state != future.state:
            logger.debug("job %s: %s -> %s", future.job_id, future.state.name, status.state.name)
        future._set_state(status.state)
        if status.is_terminal:
            self._note_ended(future, status)
        else:
            self._ended.pop(future.token, None)  # requeued

    async def _cancel_never_starting(self, doomed: list[tuple[JobFuture[Any], JobStatus]]) -> None:
        """Cancel pending jobs that can never start, and fail their futures saying why."""
        doomed = [(f, s) for f, s in doomed if not f.done()]
        if not doomed:
            return
        try:
            await self._cancel([future for future, _ in doomed])
        except SubmissionError as exc:  # e.g. gone meanwhile: they are failed below all the same
            logger.warning("could not cancel %d job(s) that can never start: %s", len(doomed), exc)
        for future, status in doomed:
            error = self._dependencies.never_start_error(future, status) if self._dependencies else None
            self.resolve(
                future,
                exc=error or SubmissionError(never_start_message(future, status)),
                state=JobState.CANCELLED,
            )

    def _note_ended(self, future: JobFuture[Any], status: JobStatus) -> None:
        ended = self._ended.get(future.token)
        if ended is None:
            self._ended[future.token] = Ended(status, anyio.current_time() + _ENDED_GRACE)
            self._wakeup.set()
        else:
            ended.seen += 1
            ended.status = status

    # ----------------------------------------------------------------------------------- outcomes
    async def _collect(self, finished: list[JobFuture[Any]]) -> None:
        """Fetch the results of ``finished`` over one SFTP session, resolve them, then remove the files."""
        self.collections += 1
        self._ready.difference_update(f.token for f in finished)
        for future in await self._files.collect(finished):
            # Listed, but gone before we read it: let the scheduler tell how the job ended.
            self._present.discard(future.token)

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
        tails = await self._files.read_ended([f for f, _ in due])
        unconfirmed = [(f, e) for f, e in due if not f.done() and e.seen < 2]
        if unconfirmed:
            # Called ended once, and no result: ask once more before failing it. A job being requeued
            # (by an administrator, preemption or a node failure) may look ended for a moment.
            self.status.request()
            for future, ended in unconfirmed:
                self._ended[future.token] = attrs.evolve(ended, settle_at=now + _ENDED_GRACE)
        self._files.fail([(f, e.status) for f, e in due if not f.done() and e.seen >= 2], tails)
