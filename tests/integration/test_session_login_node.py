"""What the session does on the login node besides submitting: site setup of Slurm's commands, and
removing finished jobs' files."""

from __future__ import annotations

import secrets
import shutil
import sys
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, RemoteEnvironmentError, SlurmSession
from slurmbatch.testing import ClusterSettings

from .conftest import login_shell, session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def echo(text: str) -> str:
    print(text)
    return text


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture
def fresh_workdir(slurm_cluster: ClusterSettings) -> str:
    return f"{slurm_cluster.remote_workdir}/t-{secrets.token_hex(4)}"


def wrap_slurm_commands(cluster: ClusterSettings) -> tuple[str, str]:
    """A directory of wrappers that log each call of sbatch/squeue/scancel, and the log's path."""
    directory = f"wrap-{secrets.token_hex(4)}"
    lines = [f"mkdir -p {directory}"]
    for command in ("sbatch", "squeue", "scancel"):
        real = shutil.which(command)
        assert real is not None, f"{command} is not installed"
        lines.append(
            f'printf \'#!/bin/sh\\necho {command} >> "$HOME/{directory}/calls"\\nexec {real} "$@"\\n\''
            f" > {directory}/{command} && chmod +x {directory}/{command}"
        )
    login_shell(cluster, " && ".join(lines))
    return directory, f"{directory}/calls"


async def test_slurm_setup_runs_before_every_slurm_command(slurm_cluster: ClusterSettings) -> None:
    directory, calls = wrap_slurm_commands(slurm_cluster)
    # Only this session's non-interactive commands see the wrappers, as a site's `module load` would.
    setup = [f'export PATH="$HOME/{directory}:$PATH"']
    options = session_options(slurm_cluster, slurm_setup=setup, status_interval=(0.2, 0.5))
    async with SlurmSession("127.0.0.1", **options) as session:
        quick = await session.submit(nap, (2.0,))
        stuck = await session.submit(nap, (300.0,))
        assert await quick == 2.0  # squeue is asked while it runs without a result
        assert await stuck.cancel() is True
        with pytest.raises(JobCancelled):
            await stuck
    logged = login_shell(slurm_cluster, f"cat {calls}").split()
    assert logged.count("sbatch") == 2
    assert "squeue" in logged
    assert "scancel" in logged


async def test_slurm_commands_missing_from_the_login_path_are_named(slurm_cluster: ClusterSettings) -> None:
    options = session_options(slurm_cluster, slurm_setup=["PATH=/var/empty"])
    with pytest.raises(RemoteEnvironmentError, match=r"sbatch.*not on the login node's PATH.*slurm_setup"):
        async with SlurmSession("127.0.0.1", **options):
            pass


async def test_released_jobs_lose_their_files_soon_others_at_the_end(
    slurm_cluster: ClusterSettings, fresh_workdir: str
) -> None:
    options = session_options(slurm_cluster, remote_workdir=fresh_workdir)

    def job_files() -> list[str]:
        return login_shell(slurm_cluster, f"ls {fresh_workdir}/jobs").split()

    async with SlurmSession("127.0.0.1", **options) as session:
        kept, released = await session.submit(echo, ("kept",)), await session.submit(echo, ("released",))
        assert (await kept, await released) == ("kept", "released")
        assert "released" in await released.stdout()
        session.release([released])
        for _ in range(100):  # removed in the background, a moment after release()
            if not any(name.startswith(released.token) for name in job_files()):
                break
            await anyio.sleep(0.3)
        assert not any(name.startswith(released.token) for name in job_files())
        assert any(name.startswith(kept.token) for name in job_files())
        assert "kept" in await kept.stdout()
        late = await session.submit(nap, (60.0,))
        with pytest.raises(ValueError, match="finished jobs only"):
            session.release([late])
        await late.cancel()
        with pytest.raises(JobCancelled):
            await late
    assert job_files() == []


async def test_without_cleanup_files_stay(slurm_cluster: ClusterSettings, fresh_workdir: str) -> None:
    options = session_options(slurm_cluster, remote_workdir=fresh_workdir, cleanup=False)
    async with SlurmSession("127.0.0.1", **options) as session:
        future: Any = await session.submit(echo, ("stays",))
        await future
        session.release([future])
    names = login_shell(slurm_cluster, f"ls {fresh_workdir}/jobs").split()
    assert f"{future.token}.out" in names
