"""The remote files of a session's jobs: reading their output and values kept there, letting them go early."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._errors import PayloadError, SessionClosedError
from ._lifecycle import SessionLifecycle
from ._reconnect import retry_lost
from .future import JobFuture, RemoteValue
from .payload import unpack_value

__all__ = ["SessionFiles"]


class SessionFiles(SessionLifecycle):
    """What `SlurmSession` does with its jobs' files once they ran (standard output, error, release)."""

    # Provided by the session: whether it may be used now.
    def _require_open(self, *, allow_closing: bool = False) -> None:
        raise NotImplementedError

    async def _read_output(self, future: JobFuture[Any], stream: str) -> str:
        self._require_open(allow_closing=True)
        path = self._layout.stdout(future.token) if stream == "stdout" else self._layout.stderr(future.token)
        data = await self._reader.read(path)
        return "" if data is None else data.decode(errors="replace")

    async def _read_files(self, paths: list[str]) -> dict[str, bytes | None]:
        async def read() -> dict[str, bytes | None]:
            async with self._pool.sftp() as sftp:
                return await sftp.get_many(paths)

        return await retry_lost(read, deadline=self._reconnect_deadline, what="reading the output of jobs")

    async def _fetch_value(self, future: JobFuture[Any], remote: RemoteValue) -> Any:
        """The value of ``future`` that stayed on the cluster (it was passed to other jobs)."""
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

        With ``cleanup=True`` they are removed shortly after, in the background, together with those of
        other released jobs (one command for many); their ``stdout()`` and ``stderr()`` can no longer be
        read. Long-lived sessions call it once they are done with a job, so that the remote work
        directory does not grow. Raises :class:`ValueError` for a job that has not finished.
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
