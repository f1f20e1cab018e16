"""Coalesced submission: concurrent ``submit()`` calls reach the login node together.

Requests queue in arrival order. A worker takes whatever is waiting (up to ``max_batch``), uploads every
payload of the batch through one SFTP session, and runs every sbatch of the batch in one remote command
that reports each job's id or its own error. A lone request is sent at once; when requests arrive in a
stream, a worker waits a few milliseconds to fill its batch. ``workers`` batches may be in flight at once,
so uploads of one batch overlap the sbatch calls of another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus

from ._errors import SubmissionError
from ._remote_layout import RemoteLayout
from .future import JobFuture
from .payload import FunctionBlob
from .slurm.batch import batch_sbatch_command, parse_batch_sbatch
from .transport import SSHPool

logger = logging.getLogger("slurmbatch")

__all__ = ["SubmitRequest", "Submitter"]


@attrs.define(eq=False)
class SubmitRequest:
    """One job to submit: its payload and script, and where the submitter reports back."""

    token: str
    function: FunctionBlob
    arguments: bytes
    script: str
    done: anyio.Event = attrs.field(factory=anyio.Event)
    job_id: str | None = None
    error: BaseException | None = None
    future: JobFuture[Any] | None = None


class Submitter:
    """Turns queued :class:`SubmitRequest` objects into Slurm jobs, a batch at a time."""

    def __init__(
        self,
        pool: SSHPool,
        layout: RemoteLayout,
        *,
        on_submitted: Callable[[SubmitRequest], None],
        workers: int = 2,
        max_batch: int = 500,
        window: float = 0.005,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._on_submitted = on_submitted
        self._workers = workers
        self._max_batch = max_batch
        self._window = window
        self._send, self._receive = anyio.create_memory_object_stream[SubmitRequest](math.inf)
        # Functions already on the remote side, and those being uploaded right now (so that two batches
        # never write the same file while a job may be reading it).
        self._uploaded: set[str] = set()
        self._uploading: dict[str, anyio.Event] = {}
        self.batches = 0

    async def submit(self, request: SubmitRequest) -> None:
        """Queue ``request`` and wait until sbatch answered for it; ``request.job_id`` is then set.

        Raises :class:`SubmissionError` with sbatch's own message when the job was refused. If the
        caller is cancelled while waiting, the job is still submitted and tracked by the session.
        """
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the queue until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self._workers):
                tg.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        window = 0.0
        async for first in self._receive:
            batch = [first]
            self._drain(batch)
            if window and len(batch) < self._max_batch:
                # Requests are streaming in: wait a moment so that this batch carries more of them.
                await anyio.sleep(window)
                self._drain(batch)
            window = self._window if len(batch) > 1 else 0.0
            await self._submit_batch(batch)

    def _drain(self, batch: list[SubmitRequest]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return

    async def _submit_batch(self, batch: Sequence[SubmitRequest]) -> None:
        self.batches += 1
        try:
            await self._upload(batch)
            command = batch_sbatch_command([(r.token, self._layout.script(r.token)) for r in batch])
            result = await self._pool.run(command)
        except BaseException as exc:
            for request in batch:
                request.error = (
                    exc if isinstance(exc, Exception) else SubmissionError(f"submission interrupted: {exc!r}")
                )
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        replies = parse_batch_sbatch(result.stdout)
        logger.info("submitted a batch of %d job(s) in one command", len(batch))
        for request in batch:
            reply = replies.get(request.token)
            if reply is not None and reply.job_id is not None:
                request.job_id = reply.job_id
                self._on_submitted(request)
            else:
                said = reply.output if reply is not None else (result.stderr.strip() or "no answer")
                request.error = SubmissionError(
                    f"sbatch refused the job: {said}. Check the JobSpec options (each becomes an #SBATCH line).",
                    sbatch_stderr=said,
                )
            request.done.set()

    async def _upload(self, batch: Sequence[SubmitRequest]) -> None:
        files: dict[str, bytes] = {}
        mine: dict[str, FunctionBlob] = {}
        waits: list[anyio.Event] = []
        for request in batch:
            blob = request.function
            if blob.digest in self._uploaded or blob.digest in mine:
                pass
            elif blob.digest in self._uploading:
                waits.append(self._uploading[blob.digest])
            else:
                mine[blob.digest] = blob
                self._uploading[blob.digest] = anyio.Event()
            files[self._layout.arguments(request.token)] = request.arguments
            files[self._layout.script(request.token)] = request.script.encode()
        try:
            async with self._pool.sftp() as sftp:
                # Functions go to a temporary name first: a job of another batch may read the final name.
                staged = {f"{self._layout.function(d)}.{d[:8]}.part": b.data for d, b in mine.items()}
                await sftp.put_many({**staged, **files})
                for digest in mine:
                    await sftp.rename(
                        f"{self._layout.function(digest)}.{digest[:8]}.part", self._layout.function(digest)
                    )
            self._uploaded.update(mine)
        finally:
            for digest in mine:
                self._uploading.pop(digest).set()
        for event in waits:
            await event.wait()
        if any(r.function.digest not in self._uploaded for r in batch):
            # The batch that was uploading our function failed: upload it ourselves.
            await self._upload([r for r in batch if r.function.digest not in self._uploaded])
