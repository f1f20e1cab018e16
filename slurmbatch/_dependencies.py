"""Futures as arguments: jobs that take other jobs' values, and what the session owes them.

A :class:`JobFuture` anywhere in a call's arguments makes the call depend on that job. The future is
pickled as a reference to the upstream job's files on the cluster (``remote/upstream.py``), and the job
is submitted at once with ``--dependency=afterok:<ids>``, so Slurm starts it only after its upstream
jobs succeeded and the value travels from job to job on the cluster, never through the client.

The session keeps, per upstream job, the dependants that still need its files: the result file is not
removed when the upstream result is collected, the value stays on the cluster (the upstream future
holds a :class:`~slurmbatch.future.RemoteValue` until awaited), and ``release()`` waits for them. When an
upstream job fails or is cancelled, every job that depends on it, directly or through others, fails
with :class:`DependencyFailed` and is cancelled in one ``scancel``: Slurm would keep it pending with
``DependencyNeverSatisfied`` for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import DependencyFailed, PayloadError, SubmissionError
from ._sync_future import SyncJobFuture
from .future import JobFuture, RemoteValue
from .payload import ArgumentStore, PackedCall
from .remote.upstream import UPSTREAM_REFERENCE
from .slurm.states import JobState, JobStatus

if TYPE_CHECKING:
    from ._lifecycle import SessionLifecycle

__all__ = ["Dependencies", "dependency_option"]

logger = logging.getLogger("slurmbatch")


def dependency_option(job_ids: Iterable[str]) -> str | None:
    """Slurm's ``--dependency`` value for a job that starts after each of ``job_ids`` succeeded."""
    ids = sorted({job_id.split(";", 1)[0] for job_id in job_ids})  # "123;cluster": the id alone
    return "afterok:" + ":".join(ids) if ids else None


class _CallUpstreams:
    """Pickles the futures of one call (see :class:`~slurmbatch.payload.UpstreamValues`), noting them."""

    def __init__(self, dependencies: Dependencies) -> None:
        self._dependencies = dependencies
        #: The unfinished jobs whose values the call takes: it depends on them.
        self.pending: dict[str, JobFuture[Any]] = {}

    def future_of(self, obj: object) -> JobFuture[Any] | None:
        if isinstance(obj, JobFuture):
            return obj
        if isinstance(obj, SyncJobFuture):
            job = obj._job
            if job is None:
                raise PayloadError(
                    "A SlurmExecutor future among the arguments has not been submitted yet; pass it once "
                    "submit() returned it."
                )
            return job
        return None

    def reference(self, future: JobFuture[Any]) -> tuple[str, str, str, str] | None:
        self._dependencies.check_usable(future)
        layout = self._dependencies.layout
        if future.done():
            value = future._value
            if isinstance(value, RemoteValue) or future._value_file is not None:
                # Its value file stays on the cluster until it is released: read it there.
                return (UPSTREAM_REFERENCE, future.job_id, "", future._value_file or value.path)
            return None  # a small value, already here: it goes in the call
        self.pending[future.token] = future
        return (UPSTREAM_REFERENCE, future.job_id, layout.result(future.token), layout.value(future.token))


class Dependencies:
    """The session's jobs that take other jobs' values, by upstream job (see the module docstring)."""

    def __init__(self, session: SessionLifecycle) -> None:
        self._session = session
        # Upstream token -> dependants not yet finished (submitted, or still being submitted: None).
        self._holds: dict[str, int] = {}
        self._dependants: dict[str, list[JobFuture[Any]]] = {}
        self._upstreams: dict[str, list[JobFuture[Any]]] = {}  # by dependant token
        self._failing = False  # failing the dependants of a failed job (their own resolution waits)
        # Jobs taken over from an earlier session: which of its jobs read their values is not recorded,
        # so their files stay until this session has followed all its jobs to the end.
        self._adopted: set[str] = set()
        #: Jobs cancelled because an upstream job failed (for the tests and the log).
        self.cancelled_dependants = 0

    @property
    def layout(self) -> Any:
        return self._session._layout

    # ------------------------------------------------------------------------------- packing
    def pack(
        self, store: ArgumentStore, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[PackedCall, tuple[JobFuture[Any], ...]]:
        """Pickle a call whose arguments may hold futures; return it and the jobs it must wait for.

        Their files are held from now on (see :meth:`held`) until the call's job has finished or was
        refused: call :meth:`submitted` or :meth:`refused` with what this returned.
        """
        upstreams = _CallUpstreams(self)
        call = store.pack(args, kwargs, upstreams)
        pending = tuple(upstreams.pending.values())
        for future in pending:
            self._holds[future.token] = self._holds.get(future.token, 0) + 1
        return call, pending

    def check_usable(self, future: JobFuture[Any]) -> None:
        """Raise a plain error if ``future`` cannot be an argument of this session's jobs."""
        if future._session is not self._session:
            raise PayloadError(
                f"Job {future.job_id} belongs to another session: its value cannot be passed to this "
                "session's jobs. Await it and pass the value, or submit both jobs through one session."
            )
        if future.done() and future._exception is not None:
            raise DependencyFailed(
                f"Job {future.job_id}, whose value this call takes, failed: {_describe(future._exception)}. "
                "Nothing was submitted.",
                upstream_job_id=future.job_id,
                upstream_error=future._exception,
            )
        if self._session._jobs.files_gone(future.token):
            raise PayloadError(
                f"The remote files of job {future.job_id} were released, so its value is no longer on the "
                "cluster. Await it and pass the value, or pass the future before releasing it."
            )

    # ------------------------------------------------------------------------------- tracking
    def held(self, token: str) -> bool:
        """Whether job ``token``'s files must stay: a job that takes its value has not finished."""
        return self._holds.get(token, 0) > 0 or token in self._adopted

    def adopted(self, token: str) -> None:
        """Job ``token`` was taken over by :meth:`SlurmSession.reattach`: its files stay to the end."""
        self._adopted.add(token)

    def all_jobs_ended(self) -> None:
        """Every job of the session has ended: adopted jobs' files may go with the others."""
        self._adopted.clear()

    def submitted(self, future: JobFuture[Any], upstreams: tuple[JobFuture[Any], ...]) -> None:
        """Job ``future`` was accepted by sbatch; it takes the values of ``upstreams``."""
        if not upstreams:
            return
        self._upstreams[future.token] = list(upstreams)
        for upstream in upstreams:
            self._dependants.setdefault(upstream.token, []).append(future)
        failed = next((u for u in upstreams if u.done() and u._exception is not None), None)
        if failed is not None:  # it failed while this job was being submitted
            self.resolved(failed)

    def refused(self, upstreams: tuple[JobFuture[Any], ...]) -> None:
        """The call that takes ``upstreams`` was not submitted: their files need not stay for it."""
        for upstream in upstreams:
            self._release_hold(upstream.token)

    def resolved(self, future: JobFuture[Any], *, outcome_known: bool = True) -> None:
        """``future`` was resolved: its upstream files may go, and if it failed, so do its dependants.

        ``outcome_known=False``: the session gave up following the job (detached, unreachable), which
        may still succeed: its dependants are left to Slurm and to a later reattach, and the files of
        its upstream jobs stay for it.
        """
        if not outcome_known:
            return
        for upstream in self._upstreams.pop(future.token, ()):
            self._release_hold(upstream.token)
            dependants = self._dependants.get(upstream.token)
            if dependants is not None and future in dependants:
                dependants.remove(future)
            if not dependants:
                self._dependants.pop(upstream.token, None)
        if self._failing or future._exception is None:
            return
        if not self._dependants.get(future.token):
            return
        doomed = self._doomed_by(future)
        if not doomed:
            return
        error = future._exception
        self._failing = True
        try:
            self._fail(future, error, doomed)
        finally:
            self._failing = False
        self.cancelled_dependants += len(doomed)
        self._session._tg.start_soon(self._cancel, doomed)

    def _fail(
        self, future: JobFuture[Any] | _Failed, error: BaseException, doomed: list[JobFuture[Any]]
    ) -> None:
        if isinstance(error, DependencyFailed) and error.upstream_error is not None:
            # It never ran either: name the job that failed first, and its error.
            future, error = _Failed(error.upstream_job_id), error.upstream_error
        for dependant in doomed:
            self._session._poller.resolve(
                dependant,
                exc=DependencyFailed(
                    f"Job {dependant.job_id} was cancelled without running: job {future.job_id}, whose value "
                    f"it takes, failed ({_describe(error)}).",
                    upstream_job_id=future.job_id,
                    upstream_error=error,
                ),
                state=JobState.CANCELLED,
            )

    def never_start_error(self, future: JobFuture[Any], status: JobStatus) -> BaseException | None:
        """A :class:`DependencyFailed` for a job Slurm keeps pending because an upstream job failed."""
        if status.reason != "DependencyNeverSatisfied":
            return None
        upstreams = self._upstreams.get(future.token, [])
        failed = next((u for u in upstreams if u.done() and u._exception is not None), None)
        job_id = ", ".join(u.job_id for u in upstreams) or "another job"
        error = None
        if failed is not None:
            job_id, error = failed.job_id, failed._exception
            if isinstance(error, DependencyFailed) and error.upstream_error is not None:
                job_id, error = error.upstream_job_id, error.upstream_error
        return DependencyFailed(
            f"Job {future.job_id} was cancelled without running: Slurm will never start it, because a job "
            f"whose value it takes ({job_id}) failed or was cancelled"
            + (f" ({_describe(error)})." if error is not None else "."),
            upstream_job_id=job_id,
            upstream_error=error,
        )

    def _doomed_by(self, failed: JobFuture[Any]) -> list[JobFuture[Any]]:
        """Every unfinished job that takes ``failed``'s value, directly or through other jobs."""
        doomed: dict[str, JobFuture[Any]] = {}
        stack = [failed]
        while stack:
            for dependant in self._dependants.get(stack.pop().token, ()):
                if not dependant.done() and dependant.token not in doomed:
                    doomed[dependant.token] = dependant
                    stack.append(dependant)
        return list(doomed.values())

    async def _cancel(self, doomed: list[JobFuture[Any]]) -> None:
        try:  # already resolved: the scancel must not skip them as finished
            await self._session._jobs.cancel(doomed, resolved_too=True)
        except SubmissionError as exc:  # e.g. they ended meanwhile
            logger.warning("could not cancel %d job(s) whose upstream job failed: %s", len(doomed), exc)

    def _release_hold(self, token: str) -> None:
        count = self._holds.get(token, 0) - 1
        if count > 0:
            self._holds[token] = count
        else:
            self._holds.pop(token, None)


class _Failed:
    """The job that failed first in a chain, by its id (its future may be another job's upstream)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error recorded"
    text = str(exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
