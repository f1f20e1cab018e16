"""The scheduler queries of a session's status loop, in a task of their own.

ONE status query (``squeue`` and/or ``sacct``, see :mod:`slurmbatch.slurm.status`) asks about every job
that may have ended without a result, every ``status_interval`` (adaptive: short after new work or a
cancel, growing while nothing changes). It runs apart from the collection of results: a scheduler that
takes a minute to answer never delays a result the watcher reported. A query that runs past its
``timeout`` is abandoned (its remote command is sent SIGTERM) and sent again later; a command that failed
or a reply cut short teaches nothing about the jobs it was about.

What the scheduler says goes back to the poller through the callbacks it gives; this module decides only
when to ask, what to ask, and what an answer means.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from ._errors import IncompleteReply
from .future import JobFuture
from .rpc_budget import TokenBucket
from .slurm.states import MAY_CLEAR, NEVER_STARTS, JobStatus
from .slurm.status import StatusAnswer, parse_status_reply, status_asks, status_data, status_script
from .transport import Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["NeverStartWatch", "SchedulerQueries"]


@attrs.define
class NeverStartWatch:
    """Decides when a pending job whose reason says it can never start is to be given up.

    Most such reasons never clear by waiting (a time limit over the partition's). Some may be
    temporary (:data:`~slurmbatch.slurm.states.MAY_CLEAR`: too few nodes up for what the job asks, no
    node with its features while some are down): those must persist over ``queries`` status queries in a
    row and ``seconds`` before the job is given up.
    """

    queries: int = 3
    seconds: float = 60.0
    _since: dict[str, tuple[float, int]] = attrs.field(factory=dict)

    def doomed(self, token: str, status: JobStatus, now: float) -> bool:
        """Note one query's ``status`` of job ``token``; True once the job is to be given up."""
        if not status.never_starts:
            self._since.pop(token, None)
            return False
        if status.reason not in MAY_CLEAR:
            return True
        first, seen = self._since.get(token, (now, 0))
        self._since[token] = (first, seen + 1)
        return seen + 1 >= self.queries and now - first >= self.seconds

    def forget(self, token: str) -> None:
        """Job ``token`` is no longer tracked."""
        self._since.pop(token, None)


class SchedulerQueries:
    """Asks the scheduler about jobs that may have ended without a result; see the module docstring.

    Args:
        pool: The session's SSH pool.
        accounting: Whether ``sacct`` reads slurmdbd (else the job completion file, ``sacct -c``).
        interval: Shortest and longest seconds between queries.
        timeout: Seconds a query may run before it is abandoned and sent again later.
        budget: The session's RPC budget, if any: a query over budget is postponed, not sent.
        slurm_setup: Shell lines (each ending in a newline) run before the scheduler is asked.
        candidates: The jobs to ask about now, by job id (live, no result file known).
        report: Called with each job the scheduler answered about and its status.
        forgotten: Called with each job neither squeue nor sacct knows any longer.
        never_start: Called with the jobs that can never start, and why, to cancel them.
        answered: Called after each query that reached the scheduler (``True``) or not.
    """

    def __init__(
        self,
        pool: Transport,
        *,
        accounting: bool,
        interval: tuple[float, float],
        timeout: float = 30.0,
        budget: TokenBucket | None,
        slurm_setup: str,
        candidates: Callable[[], dict[str, JobFuture[Any]]],
        report: Callable[[JobFuture[Any], JobStatus], None],
        forgotten: Callable[[JobFuture[Any]], None],
        never_start: Callable[[list[tuple[JobFuture[Any], JobStatus]]], Awaitable[None]],
        answered: Callable[[bool], None],
    ) -> None:
        self._pool = pool
        self._script = status_script(jobcomp=not accounting, setup=slurm_setup)
        self._min, self._max = interval
        #: Seconds a query may run before it is abandoned (and sent again later).
        self.timeout = timeout
        self._budget = budget
        self._candidates = candidates
        self._report = report
        self._forgotten = forgotten
        self._never_start = never_start
        self._answered = answered
        self._due = 0.0
        self._wait = self._min
        self._wakeup = anyio.Event()
        self.vanished: set[str] = set()  # job ids squeue no longer knows: sacct is asked about them
        self.never_starts = NeverStartWatch()
        #: Status queries sent to the scheduler (each one remote command).
        self.queries = 0
        #: Queries abandoned because they ran past ``timeout``.
        self.timeouts = 0
        #: When the scheduler last answered a query (anyio clock).
        self.last_answer = 0.0

    def request(self) -> None:
        """Ask at once (e.g. after a cancel, or while the watcher is down)."""
        self._due = 0.0
        self._wakeup.set()

    def new_work(self) -> None:
        """New jobs: ask at the short interval again."""
        self._wait = self._min
        self._wakeup.set()

    def forget(self, future: JobFuture[Any]) -> None:
        """``future`` is resolved: nothing more to ask about it."""
        self.vanished.discard(future.job_id)
        self.never_starts.forget(future.token)

    async def run(self) -> None:
        """Query whenever due, until cancelled."""
        while True:
            # A fresh event before looking: a request arriving while we look is not lost.
            self._wakeup = anyio.Event()
            now = anyio.current_time()
            if not self._candidates():
                await self._wakeup.wait()
            elif now < self._due:
                with anyio.move_on_after(self._due - now):
                    await self._wakeup.wait()
            else:
                await self._query()

    async def _query(self) -> None:
        jobs = self._candidates()
        ids = set(jobs)
        # Arrays by their own id: squeue then lists their running tasks and their pending ones as ranges,
        # a few lines for thousands of tasks.
        asks = status_asks({_array_of(i) for i in ids - self.vanished}, ids & self.vanished)
        now = anyio.current_time()
        if self._budget is not None:
            over = self._budget.try_take(min(len(asks), self._budget.burst))
            if over:
                self._due = now + over  # ask once the bucket has refilled
                return
        self._due = now + self._wait
        self._wait = min(self._wait * 1.5, self._max)
        self.queries += 1
        try:
            result = await self._pool.script(self._script, data=status_data(asks), timeout=self.timeout)
        except TimeoutError:
            self.timeouts += 1
            logger.warning(
                "the scheduler did not answer a status query within %g s; asking again later", self.timeout
            )
            self._answered(False)
            return
        except IncompleteReply as exc:
            # The shell that ran it died, or its channel closed early: nothing is learnt, nothing
            # concluded. (A connection that cannot be had at all raises on, to the session's outage
            # handling.)
            logger.info("a status query got no complete answer (%s); asking again shortly", exc)
            self._due = anyio.current_time() + self._min
            self._answered(False)
            return
        answer = parse_status_reply(result.stdout, asks)
        if answer.unanswered:
            logger.info(
                "the scheduler did not answer %d of %d status command(s); asking again shortly",
                len(answer.unanswered),
                len(asks),
            )
            self._due = anyio.current_time() + self._min
        if len(answer.unanswered) < len(asks):
            self.last_answer = anyio.current_time()
        self._answered(len(answer.unanswered) < len(asks))
        await self._apply(answer, jobs)

    async def _apply(self, answer: StatusAnswer, jobs: dict[str, JobFuture[Any]]) -> None:
        # Only jobs that were candidates when the query was built: newer ones were not asked about.
        now = anyio.current_time()
        doomed: list[tuple[JobFuture[Any], JobStatus]] = []
        current = self._candidates()
        for job_id, future in jobs.items():
            if current.get(job_id) is not future:
                continue  # resolved meanwhile, or its result is on its way
            vanished = job_id in self.vanished
            if not answer.answered(
                "sacct" if vanished else "squeue", job_id if vanished else _array_of(job_id)
            ):
                continue
            status = answer.statuses.get(job_id)
            if status is None:
                if vanished:
                    self._forgotten(future)
                elif _array_of(job_id) not in answer.cut_short:
                    self.vanished.add(job_id)
                    self._due = 0.0  # ask sacct right away
                continue
            self.vanished.discard(job_id)
            if self.never_starts.doomed(future.token, status, now):
                doomed.append((future, status))
            self._report(future, status)
        if doomed:
            await self._never_start(doomed)


def _array_of(job_id: str) -> str:
    """The id squeue is asked with: an array task's array (``123_4;c`` -> ``123;c``)."""
    local, sep, cluster = job_id.partition(";")
    return local.split("_", 1)[0] + sep + cluster


def never_start_message(future: JobFuture[Any], status: JobStatus) -> str:
    """Why job ``future`` was cancelled, and what to change."""
    return (
        f"Slurm accepted job {future.job_id} but will never start it ({status.reason}), so it was "
        f"cancelled. {NEVER_STARTS[status.reason]}"
    )
