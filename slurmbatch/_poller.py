"""One status loop for all jobs of a session.

Each tick is one remote command. It lists the results directory (plain file-system calls, no scheduler
RPC): finished jobs are noticed by their result files, fetched together over one SFTP session, and
resolved. Only every ``status_interval`` (adaptive, or at once after a cancel) does the tick also ask the
scheduler, in ONE ``squeue`` for every live job of the session, about jobs that may have ended without a
result (timeout, out of memory, node failure, cancellation). Jobs that squeue no longer knows (purged
after MinJobAge) are looked up with one ``sacct`` (slurmdbd, or the job completion file without it).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ._errors import JobFailed, SlurmBatchError
from ._remote_layout import RemoteLayout
from .future import JobFuture
from .payload import unpack_outcome
from .slurm.commands import sacct_argv, squeue_argv
from .slurm.parse import parse_sacct, parse_squeue
from .slurm.states import JobState, JobStatus, failure_for
from .transport import SSHPool

logger = logging.getLogger("slurmbatch")

__all__ = ["Poller"]

_MARK = "@@slurmbatch-listing@@"
_STDERR_TAIL_LINES = 20


class Poller:
    """Tracks live :class:`JobFuture` objects and resolves them; see the module docstring."""

    def __init__(
        self,
        pool: SSHPool,
        layout: RemoteLayout,
        *,
        accounting: bool,
        check_interval: tuple[float, float] = (0.1, 1.0),
        status_interval: tuple[float, float] = (2.0, 30.0),
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._accounting = accounting
        self._check_min, self._check_max = check_interval
        self._status_min, self._status_max = status_interval
        self._live: dict[str, JobFuture[Any]] = {}  # by token
        self._by_job_id: dict[str, JobFuture[Any]] = {}
        self._ended_without_result: dict[str, JobStatus] = {}  # by token, waiting one more tick
        self._vanished: set[str] = set()  # job ids squeue no longer knows
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._progress = anyio.Event()
        self._status_due = 0.0
        self._status_wait = self._status_min
        self.scheduler_queries = 0
        self.ticks = 0

    # ----------------------------------------------------------------------------------- tracking
    def track(self, future: JobFuture[Any]) -> None:
        """Start watching ``future``'s job."""
        self._live[future.token] = future
        self._by_job_id[future.job_id] = future
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        # New work: look again soon, and ask the scheduler at the short interval again.
        self._status_wait = self._status_min
        self._wakeup.set()

    def request_status(self) -> None:
        """Ask the scheduler at the next tick (e.g. right after a cancel)."""
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

    # ----------------------------------------------------------------------------------- loop
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled."""
        task_status.started()
        wait = self._check_min
        while True:
            if not self._live:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                wait = self._check_min
            found = await self._tick()
            wait = self._check_min if found else min(wait * 1.5, self._check_max)
            self._wakeup = anyio.Event()
            with anyio.move_on_after(wait):
                await self._wakeup.wait()

    async def _tick(self) -> bool:
        self.ticks += 1
        now = anyio.current_time()
        ask_scheduler = now >= self._status_due
        command = f"ls -1 {shlex.quote(self._layout.results_dir)}"
        asked: set[str] = set()
        if ask_scheduler:
            asked = {f.job_id for f in self._live.values()}
            # Scheduler first, listing second: a job squeue calls ended has written its result before.
            command = f"{self._status_command()}; echo {_MARK}; {command}"
            self.scheduler_queries += 1
            self._status_due = now + self._status_wait
            self._status_wait = min(self._status_wait * 1.5, self._status_max)
        result = await self._pool.run(command)
        output = result.stdout
        statuses: dict[str, JobStatus] | None = None
        if ask_scheduler:
            status_text, _, output = output.partition(f"{_MARK}\n")
            statuses = self._parse_status(status_text)
        finished = [
            self._live[token]
            for name in output.split()
            if (token := RemoteLayout.token_of_result(name)) is not None and token in self._live
        ]
        if finished:
            await self._collect(finished)
        if statuses is not None:
            # Only jobs that were live when the command was built: newer ones were not asked about.
            await self._apply_statuses(statuses, asked)
        return bool(finished)

    def _status_command(self) -> str:
        ids = sorted({f.job_id for f in self._live.values()} - self._vanished)
        parts = []
        if ids:
            parts.append(shlex.join(squeue_argv(ids)) + " 2>/dev/null")
        if self._vanished:
            parts.append(
                f"echo @@sacct; {shlex.join(sacct_argv(sorted(self._vanished), jobcomp=not self._accounting))} 2>/dev/null"
            )
        return "; ".join(parts) or "true"

    def _parse_status(self, text: str) -> dict[str, JobStatus]:
        squeue_text, _, sacct_text = text.partition("@@sacct\n")
        statuses = parse_squeue(squeue_text)
        if sacct_text:
            statuses.update({k: v for k, v in parse_sacct(sacct_text).items() if k in self._vanished})
        return statuses

    async def _apply_statuses(self, statuses: dict[str, JobStatus], asked: set[str]) -> None:
        ended: list[tuple[JobFuture[Any], JobStatus]] = []
        for job_id in asked:
            future = self._by_job_id.get(job_id)
            if future is None:
                continue  # resolved by its result file in this very tick
            status = statuses.get(job_id)
            if status is None:
                if job_id in self._vanished:
                    # Neither squeue nor sacct knows it: Slurm has forgotten it entirely.
                    ended.append(
                        (future, JobStatus(JobState.UNKNOWN, raw_state="unknown to squeue and sacct"))
                    )
                else:
                    self._vanished.add(job_id)
                    self._status_due = 0.0
                continue
            self._vanished.discard(job_id)
            if status.state != future.state:
                logger.debug("job %s: %s -> %s", job_id, future.state.name, status.state.name)
            future._set_state(status.state)
            if status.is_terminal:
                if future.token in self._ended_without_result:
                    ended.append((future, status))
                else:
                    # Give its result file one more tick to appear (network file systems lag).
                    self._ended_without_result[future.token] = status
                    self._status_due = 0.0
        if ended:
            await self._fail_ended(ended)

    async def _collect(self, finished: list[JobFuture[Any]]) -> None:
        paths = {self._layout.result(f.token): f for f in finished}
        async with self._pool.sftp() as sftp:
            contents = await sftp.get_many(paths)
            for path, future in paths.items():
                data = contents.get(path)
                if data is None:
                    continue
                try:
                    self.resolve(
                        future,
                        value=unpack_outcome(data, job_id=future.job_id, source_file=future._source_file),
                    )
                except Exception as exc:
                    self.resolve(future, exc=exc, state=JobState.FAILED)
                # Collected: remove it so that the listing stays as short as the number of live jobs.
                await sftp.remove(path)
        logger.info("collected %d result(s)", len(finished))

    async def _fail_ended(self, ended: list[tuple[JobFuture[Any], JobStatus]]) -> None:
        tails = await self._stderr_tails(f for f, _ in ended)
        for future, status in ended:
            if status.state is JobState.COMPLETED or status.state is JobState.UNKNOWN:
                exc: JobFailed = JobFailed(
                    f"Job {future.job_id} ended ({status.raw_state or status.state.name}) without writing a "
                    "result: the job script failed before or after the function ran (see its stderr).",
                    job_id=future.job_id,
                    state=status.state.name,
                    exit_code=status.exit_code,
                    signal=status.signal,
                    stderr_tail=tails.get(future.token, ""),
                )
            else:
                exc = failure_for(status, job_id=future.job_id, stderr_tail=tails.get(future.token, ""))
            self.resolve(future, exc=exc, state=status.state)

    async def _stderr_tails(self, futures: Iterable[JobFuture[Any]]) -> dict[str, str]:
        paths = {self._layout.stderr(f.token): f.token for f in futures}
        try:
            async with self._pool.sftp() as sftp:
                contents = await sftp.get_many(paths)
        except (OSError, SlurmBatchError):
            return {}
        return {
            paths[path]: "\n".join(data.decode(errors="replace").splitlines()[-_STDERR_TAIL_LINES:])
            for path, data in contents.items()
            if data
        }

    def resolve(
        self,
        future: JobFuture[Any],
        *,
        value: Any = None,
        exc: BaseException | None = None,
        state: JobState | None = None,
    ) -> None:
        """Resolve ``future`` with a value or an exception, and stop tracking it."""
        if exc is None:
            future._set_result(value)
        else:
            future._set_exception(exc, state)
        self._live.pop(future.token, None)
        self._by_job_id.pop(future.job_id, None)
        self._ended_without_result.pop(future.token, None)
        self._vanished.discard(future.job_id)
        if not self._live:
            self._idle.set()
        self._progress.set()
        self._progress = anyio.Event()
