"""What a SlurmSession does with the jobs it holds: wait for them, cancel them, read and release their files.

These are the session's hooks for the layers built on it ([`SlurmExecutor`][slurmbatch.SlurmExecutor], progress
bars): `SessionJobs.progress_event` to wait for many jobs at once without a task per job, and
`SessionJobs.cancel_jobs` to cancel many jobs with one `scancel`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import anyio

from ._errors import PayloadError, SessionClosedError
from ._file_reads import files_for
from ._lifecycle import SessionLifecycle
from ._reconnect import retry_lost
from .future import JobFuture, RemoteValue
from .payload import unpack_value

__all__ = ["SessionJobs"]

T = TypeVar("T")


class SessionJobs(SessionLifecycle):
    """The part of [`SlurmSession`][slurmbatch.SlurmSession] that serves its jobs (see the module docstring)."""

    def progress_event(self) -> anyio.Event:
        """An event set the next time any job of the session finishes (a new event after each).

        For code that waits on many futures at once: take the event first, then look at the futures,
        then wait for the event, so that no job finishes unseen between the look and the wait. Once
        the session has closed, the event is not set again. Raises [`SessionClosedError`][slurmbatch.SessionClosedError] before
        the session is open.
        """
        if self._state == "new":
            self._require_open()
        return self._poller.progress_event()

    async def as_completed(self, futures: Iterable[JobFuture[T]]) -> AsyncIterator[JobFuture[T]]:
        """Yield `futures` as their jobs finish (whatever the outcome), first finished first."""
        pending = list(futures)
        while pending:
            progress = self._poller.progress_event()
            still = []
            for future in pending:
                if future.done():
                    yield future
                else:
                    still.append(future)
            pending = still
            if pending:
                await progress.wait()

    async def cancel_jobs(self, futures: Iterable[JobFuture[Any]]) -> None:
        """Cancel the unfinished jobs among `futures`, pending or running, with one `scancel`.

        Their futures then raise [`JobCancelled`][slurmbatch.JobCancelled] (unless a job finished first); finished ones are
        left as they are. The scancel is shielded from the caller's cancellation, so that a cancel
        once sent is not lost halfway. Raises [`SubmissionError`][slurmbatch.SubmissionError] with scancel's own words if it
        failed, and [`SessionClosedError`][slurmbatch.SessionClosedError] once the session is closed.
        """
        self._require_open(allow_closing=True)
        futures = list(futures)
        self._retries.cancelled(futures)  # before scancel: a retry under way must not outlive the cancel
        await self._jobs.cancel(futures)

    async def _read_output(self, future: JobFuture[Any], stream: str) -> str:
        self._require_open(allow_closing=True)
        path = self._layout.stdout(future.token) if stream == "stdout" else self._layout.stderr(future.token)
        data = await self._reader.read(path)
        return "" if data is None else data.decode(errors="replace")

    async def _read_files(self, paths: list[str]) -> dict[str, bytes | None]:
        async def read() -> dict[str, bytes | None]:
            async with files_for(self._pool, len(paths)) as files:
                return await files.get_many(paths)

        return await retry_lost(read, deadline=self._reconnect_deadline, what="reading the output of jobs")

    async def _fetch_value(self, future: JobFuture[Any], remote: RemoteValue) -> Any:
        """The value of `future` that stayed on the cluster (it was passed to other jobs)."""
        if self._state not in ("open", "closing"):
            raise SessionClosedError(
                f"The value of job {future.job_id} stayed on the cluster, because it was passed to other jobs, "
                "and the session has closed. Await the future inside the session's `async with` block."
            )
        data = await self._reader.read(remote.path)
        if data is None:
            raise PayloadError(
                f"The value file {remote.path} of job {future.job_id} is gone (the job was released, or its "
                "work directory removed): await a future before releasing it."
            )
        return unpack_value(data, job_id=future.job_id)

    def release(self, futures: Iterable[JobFuture[Any]]) -> None:
        """Let the remote files of these finished jobs go now, instead of when the session ends.

        With `cleanup=True` they are removed shortly after, in the background, together with those of
        other released jobs (one command for many); their `stdout()` and `stderr()` can no longer be
        read. Long-lived sessions call it once they are done with a job, so that the remote work
        directory does not grow. Raises `ValueError` for a job that has not finished.
        """
        self._require_open(allow_closing=True)
        futures = list(futures)
        unfinished = [f.job_id for f in futures if not f.done()]
        if unfinished:
            raise ValueError(
                f"release() takes finished jobs only; still running: {', '.join(unfinished[:5])}. "
                "Await them (or cancel them) first."
            )
        self._jobs.release(futures)

    def _require_open(self, *, allow_closing: bool = False) -> None:
        if self._state == "open" or (allow_closing and self._state == "closing"):
            return
        if self._state == "new":
            raise SessionClosedError(
                "The session is not open yet: use it inside `async with SlurmSession(...)`."
            )
        raise SessionClosedError("The session is closed: submit and read jobs inside its `async with` block.")
