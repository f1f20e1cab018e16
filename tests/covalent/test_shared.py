"""The module-level shared sessions, against the local cluster, on asyncio and on uvloop (Covalent's loop)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobFailed, JobSpec
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch_covalent import _shared
from slurmbatch_covalent.params import SessionSettings, resolve, session_settings

from .conftest import login_shell

pytestmark = [pytest.mark.anyio, pytest.mark.covalent, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The shared sessions serve Covalent's server: asyncio, and the uvloop it runs on."""
    if request.param[1]:
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture(scope="module")
def remote_workdir(slurm_cluster: ClusterSettings) -> Iterator[str]:
    workdir = f"{slurm_cluster.remote_workdir}-covalent-shared"
    yield workdir
    login_shell(slurm_cluster, f"rm -rf {workdir}")


@pytest.fixture
def settings(slurm_cluster: ClusterSettings, remote_workdir: str) -> SessionSettings:
    given = {
        "address": slurm_cluster.host,
        "port": slurm_cluster.port,
        "username": slurm_cluster.user,
        "ssh_key_file": slurm_cluster.key_file,
        "known_hosts": slurm_cluster.known_hosts,
        "ssh_config": [],
        "python": slurm_cluster.python,
        "remote_workdir": remote_workdir,
        "max_connections": 1,
        "poll_freq": 1,
    }
    return session_settings(resolve(given, {}))


def double(x: int) -> int:
    return 2 * x


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


async def test_tasks_share_one_session_that_closes_when_idle(
    settings: SessionSettings, slurm_cluster: ClusterSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_shared, "IDLE_TIMEOUT", 1.0)
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    seen: list[Any] = []

    async def task(x: int) -> None:
        async with _shared.lease(settings) as entry:
            assert entry.session is not None
            seen.append(entry.session)
            assert await (await entry.session.submit(double, (x,))) == 2 * x

    async with anyio.create_task_group() as tg:
        for x in range(10):
            tg.start_soon(task, x)
    assert len({id(session) for session in seen}) == 1
    assert mark.logins() == 1  # max_connections=1, whatever the number of tasks

    # A task that comes while the session is still open borrows it; after the idle timeout it is gone.
    async with _shared.lease(settings) as entry:
        assert entry.session is seen[0]
    with anyio.fail_after(10):
        await entry.wait_closed()
    assert _shared._sessions_of(asyncio.get_running_loop()).get(settings) is None
    async with _shared.lease(settings) as entry:
        assert entry.session is not seen[0]


def fails_first_then_naps(marker: str) -> None:
    """The first attempt's job fails (state FAILED); a later one naps until it is cancelled."""
    import os
    import time

    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    time.sleep(300)


async def test_the_first_job_id_of_a_retried_task_cancels_its_latest_attempt(
    settings: SessionSettings, slurm_cluster: ClusterSettings
) -> None:
    marker = f"{settings.remote_workdir}-retry-marker"  # on this machine: the cluster's nodes are local
    spec = JobSpec(coalesce=False, retries=1, retry_on=(JobFailed,))
    async with _shared.lease(settings) as entry:
        assert entry.session is not None
        future = await entry.session.submit(fails_first_then_naps, (marker,), spec)
        entry.track(future)
        handle = future.job_id  # what Covalent keeps as the task's job handle
        for _ in range(300):
            if future.state.name == "RUNNING" and len(future.attempts) == 2:
                break
            await anyio.sleep(0.2)
        assert future.attempts[0] == handle and future.job_id != handle
        assert await _shared.cancel_job(settings, handle) is True
        with pytest.raises(JobCancelled) as raised, anyio.fail_after(60):
            await future
        assert raised.value.job_id == future.job_id and entry.was_cancelled(future)
        entry.untrack(future)
    login_shell(slurm_cluster, f"rm -f {marker}")
    assert await _shared.cancel_job(settings, handle) is False


async def test_a_job_of_a_live_task_can_be_cancelled_by_id(settings: SessionSettings) -> None:
    async with _shared.lease(settings) as entry:
        assert entry.session is not None
        future = await entry.session.submit(nap, (300,), JobSpec(coalesce=False))
        entry.track(future)
        assert await _shared.cancel_job(settings, future.job_id) is True
        with pytest.raises(JobCancelled), anyio.fail_after(60):
            await future
        assert future.job_id in entry.cancelled
        entry.untrack(future)
    assert await _shared.cancel_job(settings, future.job_id) is False


async def test_a_session_that_cannot_open_fails_every_waiting_task(settings: SessionSettings) -> None:
    import attrs

    broken = attrs.evolve(settings, known_hosts="/nonexistent/known_hosts")
    with pytest.raises(_shared.SessionUnavailableError, match="Could not open a Slurm session"):
        async with _shared.lease(broken):
            pass
    assert _shared._sessions_of(asyncio.get_running_loop()).get(broken) is None  # the next task tries again
