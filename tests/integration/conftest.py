"""Fixtures shared by the integration tests: how to open a session on the local clusters."""

from __future__ import annotations

import subprocess
from typing import Any

import anyio
import pytest

from slurmbatch.testing import ClusterSettings


def session_options(cluster: ClusterSettings, **overrides: Any) -> dict[str, Any]:
    """SlurmSession keyword arguments for ``cluster`` (without the host)."""
    options: dict[str, Any] = {
        "port": cluster.port,
        "user": cluster.user,
        "key_file": cluster.key_file,
        "known_hosts": cluster.known_hosts,
        "ssh_config": (),
        "remote_workdir": cluster.remote_workdir,
        "python": cluster.python,
        "status_interval": (0.5, 2.0),
    }
    options.update(overrides)
    return options


@pytest.fixture
def session_kwargs(slurm_cluster: ClusterSettings) -> dict[str, Any]:
    """SlurmSession(host, **session_kwargs) opens a session on the local cluster."""
    return session_options(slurm_cluster)


def login_shell(cluster: ClusterSettings, command: str) -> str:
    """Run ``command`` on the cluster's login node as the job user, through the system ssh client."""
    done = subprocess.run(
        ["ssh", "-F", cluster.ssh_config, cluster.ssh_alias, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def sdiag_count(cluster: ClusterSettings, *rpcs: str) -> int:
    """How many RPCs of the named types slurmctld has served since it started, added up.

    Names match exactly: squeue asks with REQUEST_JOB_INFO_SINGLE for one id, REQUEST_JOB_INFO for more.
    """
    total = 0
    for line in login_shell(cluster, "sdiag").splitlines():
        words = line.split()
        if words and words[0] in rpcs:
            total += int(line.split("count:")[1].split()[0])
    return total


async def requeue_and_restart(cluster: ClusterSettings, job_id: str) -> None:
    """Requeue a running job as preemption or an administrator would, and let it start again at once.

    Slurm holds a requeued batch job back until its credential has expired (two minutes); once the first
    run has been cleaned up on its node, its start time is set to now.
    """
    login_shell(cluster, f"scontrol requeue {job_id}")
    for _ in range(100):
        if login_shell(cluster, f"squeue -h -j {job_id} -o %T").strip() == "PENDING":
            break
        await anyio.sleep(0.1)
    await anyio.sleep(2)
    login_shell(cluster, f"scontrol update jobid={job_id} starttime=now")
