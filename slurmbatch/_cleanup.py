"""Cancelling a session's jobs and removing their remote files, within time caps that hold.

Cancelling goes through ``xargs scancel`` with the ids on stdin (a big map's tasks would not fit on one
command line), a budget's burst at a time. Each cancellation is shielded from the cancellation that may
have caused it, but has a deadline of its own: shielded scopes ignore the deadlines of outer scopes, so
the cap must sit on the shielded scope itself. Jobs the cap leaves uncancelled are reported, by id, in
their futures' errors and in the log, and stay in the journal for a later reattach.
"""

from __future__ import annotations

import functools
import logging
import math
import posixpath
import shlex
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import anyio

from ._errors import JobCancelled, SessionClosedError, SubmissionError
from ._poller import Poller
from ._reconnect import retry_lost
from ._remote_layout import RemoteLayout
from ._submitter import Submitter
from .future import JobFuture
from .rpc_budget import TokenBucket
from .slurm.commands import scancel_commands
from .slurm.states import JobState
from .transport import Transport

__all__ = ["JobCleanup"]

logger = logging.getLogger("slurmbatch")


def _job_token(token: str) -> str:
    """The token of the job a (possibly array task) token belongs to: ``sb-x.4`` -> ``sb-x``."""
    return token.split(".", 1)[0]


def _some(ids: Sequence[str]) -> str:
    return " ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


class JobCleanup:
    """What a session does about its jobs when it (or a job) ends: scancel, give up, remove files.

    Args:
        session_id: The session's journal name, for the hints in errors (``reattach(<id>)``).
        cancel_timeout: Seconds the session's exit may spend on each of: waiting for submissions under
            way, and cancelling live jobs.
        remove_files: Whether collected jobs' remote files are removed (the session's ``cleanup=``).
        held: Whether a job's files must stay for now (jobs that take its value have not finished).
    """

    def __init__(
        self,
        pool: Transport,
        layout: RemoteLayout,
        poller: Poller,
        submitter: Submitter,
        *,
        session_id: str,
        budget: TokenBucket | None,
        slurm_setup: str,
        reconnect_deadline: float,
        cancel_timeout: float,
        remove_files: bool,
        held: Callable[[str], bool] = lambda token: False,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._poller = poller
        self._submitter = submitter
        self._session_id = session_id
        self._budget = budget
        self._slurm_setup = slurm_setup
        self._reconnect_deadline = reconnect_deadline
        self.cancel_timeout = cancel_timeout
        self._remove = remove_files
        self._held = held
        self.collected: dict[str, None] = {}  # job tokens whose remote files may be removed at exit
        self._releasing: set[str] = set()  # tokens whose files release() asked to remove soon
        self._release_wakeup = anyio.Event()
        self._kept: set[str] = set()  # tokens of jobs given up on: their files stay for a reattach

    # ------------------------------------------------------------------------------- cancelling
    async def cancel(
        self, futures: Sequence[JobFuture[Any]], *, within: float | None = None, resolved_too: bool = False
    ) -> list[JobFuture[Any]]:
        """``scancel`` the live jobs among ``futures``; return those ``within`` left no time to cancel.

        ``resolved_too``: also those already resolved by the session while their jobs may still exist
        (e.g. failed because a job they depend on failed).

        Shielded from outside cancellation, and bounded by ``within`` seconds (None: no bound). Raises
        :class:`SubmissionError` with scancel's words if scancel failed.
        """
        live = list(futures) if resolved_too else [f for f in futures if not f.done()]
        if not live:
            return []
        step = self._budget.burst if self._budget is not None else len(live)
        sent = 0
        deadline = math.inf if within is None else anyio.current_time() + within
        with anyio.CancelScope(shield=True, deadline=deadline):
            for start in range(0, len(live), step):
                chunk = live[start : start + step]
                if self._budget is not None:
                    await self._budget.acquire(len(chunk))
                # One scancel per cluster: a job of another cluster is cancelled there (--clusters).
                for command, ids in scancel_commands([f.job_id for f in chunk]):
                    result = await retry_lost(
                        functools.partial(
                            self._pool.script,
                            f"{self._slurm_setup}{command}",
                            data="\n".join(ids),
                            what="scancel",
                        ),
                        deadline=self._reconnect_deadline,
                        what="cancelling jobs",
                    )
                    if not result.ok:
                        raise SubmissionError(
                            f"scancel failed: {result.stderr.strip() or result.stdout.strip()}"
                        )
                sent = start + len(chunk)
        logger.info("cancelled %d job(s)", sent)
        self._poller.request_status()
        return live[sent:]

    async def cancel_at_exit(self, why: str) -> None:
        """Cancel everything the session started: submissions under way too, each step capped."""
        await self._settle_submissions()
        live = self._poller.live()
        if not live:
            return
        left: list[JobFuture[Any]] = []
        try:
            left = await self.cancel(live, within=self.cancel_timeout)
        except Exception as exc:  # e.g. some had just ended: they are reported as cancelled below either way
            logger.warning("could not cancel %d job(s): %s", len(live), exc)
        kept = {id(f) for f in left}
        for future in live:
            if id(future) not in kept:
                self.resolve_cancelled(future, why)
        if left:
            ids = [f.job_id for f in left]
            logger.warning(
                "%d job(s) were not cancelled within cancel_timeout=%g s and may still be queued or running: %s",
                len(left),
                self.cancel_timeout,
                _some(ids),
            )
            for future in left:
                self.abandon(
                    future,
                    SessionClosedError(
                        f"Job {future.job_id} could not be cancelled within cancel_timeout={self.cancel_timeout:g} s "
                        f"when {why}; it may still be queued or running. Cancel it with `scancel {future.job_id}`, "
                        f"or collect it from a new session with `await session.reattach({self._session_id!r})`."
                    ),
                )

    def resolve_cancelled(self, future: JobFuture[Any], why: str) -> None:
        """Resolve the future of a job just cancelled, saying ``why``."""
        self._poller.resolve(
            future,
            exc=JobCancelled(
                f"Job {future.job_id} was cancelled: {why}.", job_id=future.job_id, state="CANCELLED"
            ),
            state=JobState.CANCELLED,
        )

    async def undo_map(self, accepted: Sequence[JobFuture[Any]], error: BaseException) -> BaseException:
        """Cancel the calls of a map sbatch accepted before it refused another; return the error to raise."""
        if not accepted:
            return error
        left: list[JobFuture[Any]] = []
        try:
            left = await self.cancel(accepted, within=self.cancel_timeout)
        except SubmissionError as exc:
            logger.warning(
                "could not cancel the %d accepted call(s) of a refused map: %s", len(accepted), exc
            )
            left = [f for f in accepted if not f.done()]
        why = "another part of the same map() was refused"
        kept = {id(f) for f in left}
        for future in accepted:
            if id(future) not in kept:
                self.resolve_cancelled(future, why)
        said = f"The {len(accepted) - len(left)} call(s) of this map that sbatch had accepted were cancelled."
        if left:
            ids = " ".join(f.job_id for f in left)
            said += f" These could not be cancelled and may be queued: scancel {ids}"
        if not isinstance(error, SubmissionError):
            logger.warning("%s (%s)", said, error)
            return error
        refused = SubmissionError(f"{error} {said}", sbatch_stderr=error.sbatch_stderr)
        refused.__cause__ = error
        return refused

    async def _settle_submissions(self) -> None:
        """Queued submissions fail; those under way are waited for, or their fences claimed (capped)."""
        self._submitter.close()
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self.cancel_timeout):
            await self._submitter.wait_idle()
            await self._submitter.claim_interrupted()
        tokens = self._submitter.unsettled_tokens()
        if tokens:
            logger.warning(
                "%d submission(s) were still under way after cancel_timeout=%g s; jobs they submitted may be "
                "queued: look for their tokens in squeue's comment field (squeue --me -O JobID,Comment): %s",
                len(tokens),
                self.cancel_timeout,
                _some(tokens),
            )

    # ------------------------------------------------------------------------------- giving up
    def abandon(self, future: JobFuture[Any], error: BaseException) -> None:
        """Fail ``future`` with ``error`` without calling its job ended: the journal keeps it as not
        collected, and its remote files stay, for a later :meth:`SlurmSession.reattach`."""
        self.collected.pop(future.token, None)
        self._releasing.discard(future.token)
        self._kept.add(future.token)
        self._poller.resolve(future, exc=error, collected=False)

    def abandon_live(self, error_for: Callable[[JobFuture[Any]], BaseException]) -> None:
        """:meth:`abandon` every live job, each with its own error."""
        for future in self._poller.live():
            self.abandon(future, error_for(future))

    def detached_error(self, future: JobFuture[Any]) -> SessionClosedError:
        """What a future of a detached session raises once the session has ended."""
        return SessionClosedError(
            f"Job {future.job_id} was detached from session {self._session_id}, which has ended; the job runs "
            f"on without it. Collect it from a new session with `await session.reattach({self._session_id!r})`."
        )

    # ------------------------------------------------------------------------------- remote files
    def release(self, futures: Iterable[JobFuture[Any]]) -> None:
        """Remove these finished jobs' files soon (see :meth:`SlurmSession.release`)."""
        if self._remove:
            self._releasing.update(f.token for f in futures if f.token in self.collected)
            self._release_wakeup.set()

    def files_gone(self, token: str) -> bool:
        """Whether job ``token``'s remote files were removed, or are to be (it was released)."""
        return token not in self.collected or token in self._releasing

    async def remove_released(self) -> None:
        """Remove released jobs' files in batches: wait a moment after the first, so more come along."""
        while True:
            await self._release_wakeup.wait()
            await anyio.sleep(1.0)
            self._release_wakeup = anyio.Event()
            tokens, self._releasing = self._releasing, set()
            # Files that jobs still to run will read stay until they have finished: asked again later.
            waiting = {token for token in tokens if self._held(token)}
            if waiting:
                self._releasing |= waiting
                self._release_wakeup.set()
            with anyio.CancelScope(shield=True):  # they are no longer listed for the session's end
                await self._remove_files(tokens - waiting)

    async def remove_collected(self) -> None:
        """Remove the files of every collected job (at the session's end)."""
        live = {f.token for f in self._poller.live()}
        # A detached job may still read a finished job's value: those files stay (for a reattach).
        await self._remove_files([t for t in self.collected if t not in live and not self._held(t)])

    async def _remove_files(self, done: Collection[str]) -> None:
        """Remove the remote files of the finished jobs ``done`` (tokens)."""
        if not done:
            return
        live = {f.token for f in self._poller.live()}
        for token in done:
            self.collected.pop(token, None)
        # A job's own files, and the files an array's tasks share once none of its tasks is live.
        names = [f"{token}{suffix}" for token in done for suffix in (".out", ".err", ".ranks", ".value.pkl")]
        # A result file kept for the jobs that took its value (collected ones are gone: rm -f is quiet).
        results = posixpath.relpath(self._layout.results_dir, self._layout.jobs_dir)
        names += [posixpath.join(results, f"{token}.pkl") for token in done]
        live_jobs = {_job_token(t) for t in live | self._kept}
        names += [
            f"{job}{suffix}"
            for job in {_job_token(t) for t in done} - live_jobs
            for suffix in (".args.pkl", ".sh")
        ]
        # And the fences of answered submission batches, which no recovery will ask about any more.
        fences, self._submitter.finished_fences = self._submitter.finished_fences, []
        names += [posixpath.basename(fence) for fence in fences]
        with anyio.move_on_after(60):
            try:
                # One name per line: the names are the session's own tokens, without newlines.
                await self._pool.script(
                    f"cd {shlex.quote(self._layout.jobs_dir)} && xargs rm -rf --",
                    data="\n".join(names),
                    what="removing finished jobs' files",
                )
            except Exception as exc:
                logger.warning("could not remove the remote files of %d job(s): %s", len(done), exc)
