"""Uploads by SFTP for the submitter: content-addressed files (functions, large arguments), once per
session, and the packed argument tables of array jobs."""

from __future__ import annotations

from collections.abc import Mapping

import anyio

from ._errors import SubmissionError
from ._reconnect import retry_lost
from ._remote_layout import RemoteLayout, new_token
from .transport import Transport

__all__ = ["Uploads"]


class Uploads:
    """What the submitter uploads, and which content-addressed files are already on the remote side."""

    def __init__(self, pool: Transport, layout: RemoteLayout, *, reconnect_deadline: float) -> None:
        self._pool = pool
        self._layout = layout
        self._reconnect_deadline = reconnect_deadline
        # Content-addressed files already on the remote side, and those being uploaded right now: two
        # batches never write the same file while a job may be reading it.
        self._uploaded: set[str] = set()
        self._uploading: dict[str, anyio.Event] = {}
        #: Argument tables of array jobs uploaded.
        self.tables_uploaded = 0

    def forget(self) -> None:
        """The remote work directory was recreated: upload functions and large arguments again."""
        self._uploaded.clear()

    async def shared_files(self, shared: Mapping[str, bytes]) -> None:
        """Upload the content-addressed files (by digest) that the remote side lacks."""
        mine = {d: data for d, data in shared.items() if d not in self._uploaded and d not in self._uploading}
        waits = [self._uploading[d] for d in shared if d in self._uploading]
        for digest in mine:
            self._uploading[digest] = anyio.Event()
        try:
            if mine:
                await self._upload_shared(mine)
        finally:
            for digest in mine:
                self._uploading.pop(digest).set()
        for event in waits:
            await event.wait()
        missing = {d for d in shared if d not in self._uploaded}
        if missing:
            # The batch that was uploading them failed: upload them with this batch.
            await self._upload_shared({d: shared[d] for d in missing})

    async def tables(self, tables: Mapping[str, bytes]) -> None:
        """Upload the argument tables of array jobs, before the command that submits them runs."""

        async def upload() -> None:
            async with self._pool.sftp() as sftp:
                await sftp.put_many(tables)

        try:
            await retry_lost(
                upload, deadline=self._reconnect_deadline, what=f"uploading {len(tables)} argument table(s)"
            )
        except OSError as exc:
            raise SubmissionError(
                f"Could not write the arguments of {len(tables)} array job(s) in {self._layout.jobs_dir} on the "
                f"login node, so they were not submitted: {exc}. If the disk is full or your quota exceeded, "
                "free space there (df -h, quota -s), or pass remote_workdir= a directory with room."
            ) from exc
        self.tables_uploaded += len(tables)

    async def _upload_shared(self, files: Mapping[str, bytes]) -> None:
        async def upload() -> None:
            # A temporary name first: a job of another batch may be reading the final name.
            staged = {digest: f"{self._layout.function(digest)}.{new_token()}.part" for digest in files}
            async with self._pool.sftp() as sftp:
                await sftp.put_many({staged[d]: data for d, data in files.items()})
                for digest, path in staged.items():
                    await sftp.rename(path, self._layout.function(digest))

        await retry_lost(upload, deadline=self._reconnect_deadline, what=f"uploading {len(files)} file(s)")
        self._uploaded.update(files)
