"""A multi-task job requeued while it runs reports the ranks of its last attempt only."""

from __future__ import annotations

import os
import shlex
import sys
import time

import anyio
import cloudpickle
import pytest

from slurmbatch import JobSpec, RemoteError, SlurmSession
from slurmbatch.testing import ClusterSettings

from .conftest import login_shell, requeue_and_restart, session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def rank_one_returns_then_dies() -> str:
    rank = os.environ["SLURM_PROCID"]
    if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":  # the first attempt
        if rank == "1":
            return "rank 1 of the first attempt"
        time.sleep(600)  # until the job is requeued
        return "rank 0 of the first attempt"
    if rank == "1":
        os._exit(0)  # ends without an outcome: killed, crashed...
    return "rank 0 of the second attempt"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_requeued_multi_task_job_does_not_report_a_rank_of_its_first_attempt(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    spec = JobSpec(options={"nodes": 2, "ntasks": 2, "requeue": True}, use_srun=True)
    async with SlurmSession(
        "127.0.0.1", **session_options(slurm_cluster, status_interval=(0.3, 1.0))
    ) as session:
        future = await session.submit(rank_one_returns_then_dies, spec=spec)
        ranks = shlex.quote(session._layout.rank_dir(future.token))
        for _ in range(400):  # until rank 1 has written its outcome, while rank 0 sleeps
            if login_shell(slurm_cluster, f"find {ranks} -name rank-1.pkl 2>/dev/null; true").strip():
                break
            await anyio.sleep(0.3)
        else:
            pytest.fail(f"rank 1 of job {future.job_id} wrote no outcome in its first attempt")
        await requeue_and_restart(slurm_cluster, future.job_id)

        with anyio.fail_after(120), pytest.raises(RemoteError) as raised:
            await future

    message = str(raised.value)
    assert "Rank(s) 1 of 2 wrote no outcome" in message
    assert "attempt-1" in message
