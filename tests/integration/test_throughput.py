"""Coalesced submission, content-addressed uploads and job arrays, against the real local cluster."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobSpec, RpcBudget, SlurmSession
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.testing.pytest_plugin import extra_cluster

from .conftest import login_shell, sdiag_count, session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SMALL_ARRAYS = 7


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def total(values: list[float], offset: int) -> float:
    return sum(values) + offset


@pytest.fixture
def fresh_workdir(slurm_cluster: ClusterSettings) -> str:
    """A work directory of its own, so that its files can be counted."""
    return f"{slurm_cluster.remote_workdir}/t-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def small_array_cluster() -> Iterator[ClusterSettings]:
    """A one-node cluster whose MaxArraySize is tiny, to see maps split into several arrays."""
    cluster = extra_cluster("test-cluster-arrays", nodes=1, max_array_size=SMALL_ARRAYS)
    yield cluster.up()
    cluster.down()


async def test_concurrent_submits_of_one_function_share_one_connection_and_one_upload(
    slurm_cluster: ClusterSettings, fresh_workdir: str
) -> None:
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    options = session_options(slurm_cluster, max_connections=1, remote_workdir=fresh_workdir)
    futures: list[Any] = []
    async with SlurmSession("127.0.0.1", **options) as session:

        async def submit(i: int) -> None:
            futures.append((i, await session.submit(square, (i,))))

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(submit, i)
        # Counted before the check below logs in through the system ssh client.
        assert mark.logins() == 1
        functions = login_shell(slurm_cluster, f"ls {fresh_workdir}/fn").split()
        assert len(functions) == 1, functions
        # Calls arriving together with the same function and spec became job arrays.
        assert session._submitter.sbatch_calls < 50
        values = [(i, await f) for i, f in futures]
        assert all(value == i * i for i, value in values)
        assert session._pool.stats.channel_refusals_retried == 0
    assert mark.refused_sessions() == 0


async def test_distinct_specs_are_separate_jobs(slurm_cluster: ClusterSettings, fresh_workdir: str) -> None:
    options = session_options(slurm_cluster, remote_workdir=fresh_workdir)
    async with SlurmSession("127.0.0.1", **options) as session:
        futures = []
        async with anyio.create_task_group() as tg:

            async def submit(i: int) -> None:
                spec = JobSpec(variables={"SB_INDEX": i})
                futures.append(await session.submit(square, (i,), spec))

            for i in range(20):
                tg.start_soon(submit, i)
        assert all("_" not in f.job_id for f in futures)
        assert session._submitter.sbatch_calls == 20
        assert sorted([await f for f in futures]) == sorted(i * i for i in range(20))


async def test_coalescing_can_be_turned_off(session_kwargs: dict[str, Any]) -> None:
    alone = JobSpec(coalesce=False)
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(session.submit, square, (i,), alone)
        assert session._submitter.sbatch_calls == 5


async def test_large_argument_travels_once(slurm_cluster: ClusterSettings, fresh_workdir: str) -> None:
    values = [float(i) for i in range(200_000)]  # about 1.8 MB pickled
    options = session_options(slurm_cluster, remote_workdir=fresh_workdir)
    async with SlurmSession("127.0.0.1", **options) as session:
        futures = await session.map(total, [values] * 30, range(30))
        assert [await f for f in futures] == [sum(values) + i for i in range(30)]
        listing = login_shell(slurm_cluster, f"ls -l {fresh_workdir}/fn {fresh_workdir}/jobs | grep pkl")
    big = [line for line in listing.splitlines() if int(line.split()[4]) > 1_000_000]
    assert len(big) == 1, listing


async def test_map_splits_at_max_array_size_and_keeps_order(small_array_cluster: ClusterSettings) -> None:
    count = 3 * SMALL_ARRAYS + 2
    async with SlurmSession("127.0.0.1", **session_options(small_array_cluster)) as session:
        assert session.max_array_size == SMALL_ARRAYS
        futures = await session.map(square, range(count))
        arrays = {f.job_id.split("_")[0] for f in futures}
        assert len(arrays) == 4
        assert [await f for f in futures] == [i * i for i in range(count)]


async def test_one_failing_task_fails_only_its_own_future(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        futures = await session.map(fail_on_three, range(6))
        assert len({f.job_id.split("_")[0] for f in futures}) == 1
        for i, future in enumerate(futures):
            if i == 3:
                with pytest.raises(ValueError, match="three is not allowed"):
                    await future
            else:
                assert await future == i


async def test_leaving_through_an_error_cancels_a_whole_array(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    futures: list[Any] = []
    with pytest.raises(KeyError):
        async with SlurmSession("127.0.0.1", **session_kwargs) as session:
            futures = await session.map(square, range(6), spec=JobSpec(options={"hold": True}))
            raise KeyError("stop")
    assert all(isinstance(f.exception(), JobCancelled) for f in futures)
    array = futures[0].job_id.split("_")[0]
    assert login_shell(slurm_cluster, f"squeue -h -t pending,running -j {array}").strip() == ""


async def test_array_throttle_reaches_slurm(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        futures = await session.map(
            square, range(4), spec=JobSpec(array_parallelism=2, options={"hold": True})
        )
        array = futures[0].job_id.split("_")[0]
        shown = login_shell(
            slurm_cluster, f"scontrol show job {array} | grep -o 'ArrayTaskThrottle=[0-9]*' | head -1"
        )
        assert shown.strip() == "ArrayTaskThrottle=2"
        await futures[0].cancel()
        session.detach()
        login_shell(slurm_cluster, f"scancel {array}")


async def test_map_with_progress_bar(
    session_kwargs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        futures = await session.map(square, range(5), progress=True)
    assert [await f for f in futures] == [0, 1, 4, 9, 16]
    assert "done 5" in capsys.readouterr().out


async def test_rpc_budget_paces_sbatch_and_status_queries(slurm_cluster: ClusterSettings) -> None:
    budget = RpcBudget(burst=4, rate=2.0)
    rpc_types = (
        "REQUEST_SUBMIT_BATCH_JOB",
        "REQUEST_JOB_INFO",
        "REQUEST_JOB_INFO_SINGLE",
        "REQUEST_KILL_JOB",
    )
    submits_before = sdiag_count(slurm_cluster, "REQUEST_SUBMIT_BATCH_JOB")
    options = session_options(slurm_cluster, rpc_budget=budget, status_interval=(0.1, 0.1))
    async with SlurmSession("127.0.0.1", **options) as session:
        rpcs_before = sdiag_count(slurm_cluster, *rpc_types)
        opened = anyio.current_time()
        futures: dict[int, Any] = {}

        async def submit(i: int) -> None:
            # A spec of its own per call: no two calls may share a job array.
            futures[i] = await session.submit(square, (i,), JobSpec(job_name=f"budget-{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(submit, i)
        acknowledged = anyio.current_time() - opened
        assert {i: await f for i, f in futures.items()} == {i: i * i for i in range(12)}
        elapsed = anyio.current_time() - opened
        rpcs = sdiag_count(slurm_cluster, *rpc_types) - rpcs_before
    # Twelve sbatch calls through a bucket of 4 refilled at 2/s cannot be acknowledged in under 4 s.
    assert acknowledged >= (12 - budget.burst) / budget.rate - 0.05
    assert sdiag_count(slurm_cluster, "REQUEST_SUBMIT_BATCH_JOB") - submits_before == 12
    assert session._budget is not None
    assert session._budget.spent >= 12 + session._poller.scheduler_queries
    # What slurmctld saw (the sdiag reads aside) fits the bucket.
    assert rpcs <= budget.burst + budget.rate * elapsed, (rpcs, elapsed)
