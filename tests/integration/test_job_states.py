"""Jobs that end without a result raise their typed end state, with or without slurmdbd."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobFailed, JobNodeFailure, JobSpec, JobState, JobTimeout, SlurmSession
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.pytest_plugin import TEST_OPTIONS

from .conftest import login_shell, session_options
from .fault_table import ROWS, FaultRow

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


# The 24.11 tier has no slurmdbd (see LocalCluster): its jobs end through the job completion file only.
@pytest.fixture(params=["jobcomp", "slurmdbd"] if TEST_OPTIONS.slurm == "22.05" else ["jobcomp"])
def cluster(request: pytest.FixtureRequest) -> ClusterSettings:
    """Both accounting setups: the job completion file only, and slurmdbd with MariaDB."""
    name = "slurm_cluster" if request.param == "jobcomp" else "slurm_cluster_dbd"
    settings: ClusterSettings = request.getfixturevalue(name)
    return settings


async def wait_running(futures: list[Any]) -> None:
    """Wait until the session's status loop has seen every job of ``futures`` running."""
    for _ in range(150):
        if all(f.state is JobState.RUNNING for f in futures):
            return
        await anyio.sleep(0.2)
    raise AssertionError(f"jobs did not all start: {futures}")


async def test_end_states_map_to_typed_errors(cluster: ClusterSettings, anyio_backend: str) -> None:
    async with SlurmSession("127.0.0.1", **session_options(cluster)) as session:
        # On node1: taking node2 down below would requeue it and restart its clock.
        timeout = await session.submit(
            sleep_for, (300,), JobSpec(options={"time": "0:01", "nodelist": "node1"})
        )
        exit_three = await session.submit(
            sleep_for, (0,), JobSpec(prerun_commands=["echo broken env >&2", "exit 3"])
        )
        cancelled = await session.submit(sleep_for, (300,))
        # Slurm requeues a batch job whose node fails, unless told not to; a requeued job is not failed.
        node_lost = await session.submit(
            sleep_for, (300,), JobSpec(options={"nodelist": "node2", "no-requeue": True})
        )
        await wait_running([cancelled, node_lost])
        # Outside the session, as an administrator or another tool would.
        login_shell(cluster, f"scancel {cancelled.job_id}")
        with anyio.fail_after(60), pytest.raises(JobCancelled) as was_cancelled:
            await cancelled
        assert was_cancelled.value.job_id == cancelled.job_id

        with anyio.fail_after(60), pytest.raises(JobFailed) as failed:
            await exit_three
        assert type(failed.value) is JobFailed
        assert failed.value.exit_code == 3
        assert "broken env" in failed.value.stderr_tail
        assert "broken env" in str(failed.value)

        # Taking a node down is an administrator's act: run as root with the cluster's own config.
        env = {"SLURM_CONF": cluster.slurm_conf, "PATH": "/usr/bin:/bin"}
        await anyio.run_process(
            cluster.admin_argv(
                ["scontrol", "update", "nodename=node2", "state=down", "reason=slurmbatch-test"]
            ),
            env=env,
        )
        try:
            with anyio.fail_after(60), pytest.raises(JobNodeFailure):
                await node_lost
        finally:
            # ReturnToService=2 may have brought it back already; then there is nothing to resume.
            await anyio.run_process(
                cluster.admin_argv(["scontrol", "update", "nodename=node2", "state=resume"]),
                env=env,
                check=False,
            )

        with anyio.fail_after(120):
            with pytest.raises(JobTimeout) as timed_out:
                await timeout
        assert timed_out.value.state == "TIMEOUT"
        assert timeout.state is JobState.TIMEOUT
    accounting = "slurmdbd" if cluster.slurmdbd else "job completion file"
    for fault in ("job over its time limit (JobTimeout)", "node lost under a job (JobNodeFailure)"):
        ROWS.append(FaultRow(f"{fault}, {accounting}", anyio_backend, 1, 0, 0, 0, 0.0))


async def test_end_state_of_a_job_purged_from_squeue(cluster: ClusterSettings) -> None:
    """The status interval is longer than MinJobAge: squeue forgets the job before it is asked."""
    options = session_options(cluster, status_interval=(15.0, 15.0))
    async with SlurmSession("127.0.0.1", **options) as session:
        future = await session.submit(sleep_for, (300,))
        await anyio.sleep(1)
        login_shell(cluster, f"scancel {future.job_id}")
        with anyio.fail_after(60):
            with pytest.raises(JobCancelled):
                await future
        assert session._poller.scheduler_queries >= 2
