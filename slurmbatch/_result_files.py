"""Reading the files tracked jobs leave in the remote work directory, and resolving their futures by them.

A batch of files is read together (see :mod:`._file_reads`: a few by one command, many over one SFTP
session). A result file is removed once its future is resolved and the journal has noted it, not
before: W/results stays as short as the number of live jobs, and a client killed in between finds the
result again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import PayloadError
from ._file_reads import files_for
from ._journal import Journal
from ._outcomes import ended_failure, result_outcome, stderr_tail
from ._remote_layout import RemoteLayout
from .future import JobFuture, RemoteValue
from .payload import unpack_value
from .slurm.states import JobState, JobStatus
from .transport import Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["ResultFiles"]

_STDERR_TAIL_BYTES = 16 * 1024  # read for the tail's lines; a longer last line is cut at its start


class ResultFiles:
    """Reads result and stderr files and resolves futures with what they hold.

    Args:
        pool: The session's SSH pool.
        layout: Where the session's files are.
        journal: Where resolved jobs are noted (flushed before their result files are removed).
        resolve: Resolves a future (the poller's ``resolve``).
        files_lost: Tokens of jobs whose files went with a removed work directory (shared, kept current
            by the poller).
        held: Whether jobs that take a job's value have yet to read it: its result file then stays, and
            a large value stays on the cluster (its future holds a ``RemoteValue`` until awaited).
    """

    def __init__(
        self,
        pool: Transport,
        layout: RemoteLayout,
        *,
        journal: Journal | None,
        resolve: Callable[..., None],
        files_lost: set[str],
        held: Callable[[str], bool] = lambda token: False,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._journal = journal
        self._resolve = resolve
        self._files_lost = files_lost
        self._held = held

    async def collect(self, finished: list[JobFuture[Any]]) -> list[JobFuture[Any]]:
        """Resolve ``finished`` by their result files; return those whose file was not there."""
        paths = {self._layout.result(f.token): f for f in finished}
        async with files_for(self._pool, len(paths)) as files:
            contents = await files.get_many(paths)
            collected = await self._resolve_results(files, paths, contents)
            if self._journal is not None:
                await self._journal.flush()  # collected for good before the files go
            await files.remove_many(collected)
        logger.info("collected %d result(s)", len(collected))
        return [f for path, f in paths.items() if path not in collected and not f.done()]

    async def read_ended(self, ended: list[JobFuture[Any]]) -> dict[str, str]:
        """Resolve jobs the scheduler called ended by their result files if these have appeared; return
        the tails of the others' stderr files, by token."""
        results = {self._layout.result(f.token): f for f in ended}
        stderrs = {self._layout.stderr(f.token): f.token for f in ended}
        async with files_for(self._pool, len(results) + len(stderrs)) as files:
            try:
                contents = await files.get_many(results)
                # Only the end of each stderr, read from its offset: a job may have logged gigabytes.
                contents.update(await files.get_many(stderrs, tail=_STDERR_TAIL_BYTES))
            except OSError:  # e.g. a file we may not read: the end state alone must do
                contents = {}
            collected = await self._resolve_results(files, results, contents)
            if self._journal is not None:
                await self._journal.flush()
            await files.remove_many(collected)
        return {
            stderrs[path]: stderr_tail(data) for path, data in contents.items() if path in stderrs and data
        }

    def fail(self, ended: Iterable[tuple[JobFuture[Any], JobStatus]], tails: dict[str, str]) -> None:
        """Fail jobs that ended in the given states without a result."""
        for future, status in ended:
            exc, state = ended_failure(
                future,
                status,
                tails.get(future.token, ""),
                files_lost=future.token in self._files_lost,
                workdir=self._layout.workdir,
            )
            self._resolve(future, exc=exc, state=state)

    async def _resolve_results(
        self, files: Any, paths: dict[str, JobFuture[Any]], contents: dict[str, bytes | None]
    ) -> list[str]:
        """Resolve each future whose result file was read; return those files that may go now.

        A large value the job wrote apart is fetched in the same SFTP session, unless jobs that take
        it have yet to read it: it then stays on the cluster until its future is awaited.
        """
        outcomes = []
        for path, future in paths.items():
            data = contents.get(path)
            if data is None or future.done():
                continue
            files_lost = future.token in self._files_lost
            outcome = result_outcome(data, future, files_lost=files_lost, workdir=self._layout.workdir)
            outcomes.append((path, future, outcome))
        wanted = [
            o.value.path
            for _, f, o in outcomes
            if o.error is None and isinstance(o.value, RemoteValue) and not self._held(f.token)
        ]
        values = await files.get_many(wanted) if wanted else {}
        collected = []
        for path, future, outcome in outcomes:
            value, error = outcome.value, outcome.error
            if error is None and isinstance(value, RemoteValue):
                future._value_file = value.path
                if value.path in values:
                    data = values[value.path]
                    try:
                        value = unpack_value(data, job_id=future.job_id) if data is not None else value
                    except PayloadError as exc:
                        error = exc
            if error is None:
                self._resolve(future, value=value)
            else:
                self._resolve(future, exc=error, state=JobState.FAILED)
            if not self._held(future.token):
                collected.append(path)
        return collected
