"""The stderr tail of a failed job is read from its end: a job that logged gigabytes costs no more."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobFailed, SlurmSession
from slurmbatch._remote_layout import new_token
from slurmbatch.testing import ClusterSettings
from slurmbatch.transport import SSHPool
from slurmbatch.transport.exec_files import ExecFileSession

from .conftest import login_shell
from .test_transport import settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HUGE = 128 * 2**20  # bytes: sparse, so the disk does not fill, but reading it whole would move them all


def log_a_lot_and_die(size: int) -> None:
    import os

    os.ftruncate(2, size)  # a huge stderr (a hole, as fast to make as it is slow to read)
    os.lseek(2, 0, os.SEEK_END)
    os.write(2, b"\nthe last words of the job\n")
    os._exit(3)  # no result: the session reads the stderr tail for the error


async def test_get_many_reads_only_the_tail_of_a_huge_file(slurm_cluster: ClusterSettings) -> None:
    path = f"/tmp/sb-tail-{new_token()}"
    login_shell(slurm_cluster, f"truncate -s {HUGE} {path} && printf 'end of it\\n' >> {path}")
    try:
        async with SSHPool(settings_for(slurm_cluster)) as pool:
            async with pool.sftp() as sftp:
                tails = await sftp.get_many([path, path + ".missing"], tail=100)
            by_exec = await ExecFileSession(pool).get_many([path, path + ".missing"], tail=100)
        for found in (tails, by_exec):
            assert found[path + ".missing"] is None
            data = found[path]
            assert data is not None and len(data) == 100
            assert data.endswith(b"\0end of it\n")
    finally:
        login_shell(slurm_cluster, f"rm -f {path}")


async def test_a_failed_job_with_a_huge_stderr_reports_its_last_lines(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(log_a_lot_and_die, (HUGE,))
        with anyio.fail_after(120), pytest.raises(JobFailed) as caught:
            await future
        assert caught.value.exit_code == 3
        assert caught.value.stderr_tail.endswith("the last words of the job")
        assert len(caught.value.stderr_tail) < 20_000
