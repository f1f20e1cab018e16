"""SlurmSession against the real local cluster, under asyncio and trio."""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobSpec, JobState, RemoteError, SessionClosedError, SlurmSession
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark

from .conftest import login_shell, sdiag_count

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

# Functions defined here travel by value: the job side cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SimulationDiverged(ArithmeticError):
    """A user-defined exception; the client re-raises it as itself."""


def add(a: float, b: float) -> float:
    return a + b


def where_am_i() -> dict[str, Any]:
    return {
        "node": os.environ.get("SLURMD_NODENAME"),
        "job": os.environ.get("SLURM_JOB_ID"),
        "pid": os.getpid(),
    }


def diverge(step: int) -> None:
    raise SimulationDiverged(f"diverged at step {step}")


def chatty(text: str) -> int:
    print(text)
    print(f"warning: {text}", file=sys.stderr)
    return len(text)


def slow(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "slept"


async def test_submit_returns_the_value_and_a_job_id(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(add, (1.5, 2.0))
        assert future.job_id.isdigit()
        assert await future == 3.5
        assert future.done()
        assert future.state is JobState.COMPLETED
        info = await session.submit(where_am_i)
        where = await info.result()
        assert where["node"] in ("node1", "node2")
        assert where["job"] == info.job_id


async def test_remote_exception_is_reraised_with_its_traceback(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(diverge, (7,))
        with pytest.raises(SimulationDiverged, match="diverged at step 7") as caught:
            await future
        remote = getattr(caught.value, "remote_traceback", "")
        assert "in diverge" in remote
        assert "SimulationDiverged: diverged at step 7" in remote
        assert 'raise SimulationDiverged(f"diverged at step {step}")' in remote
        if sys.version_info >= (3, 11):
            assert any("in diverge" in note for note in caught.value.__notes__)


async def test_exception_type_that_cannot_be_rebuilt_becomes_remote_error(
    session_kwargs: dict[str, Any],
) -> None:
    def raise_local_class() -> None:
        # An exception class from a module that exists only on the job side: the client cannot import it.
        import importlib
        import tempfile

        folder = tempfile.mkdtemp()
        Path(folder, "job_only_module.py").write_text("class Unimportable(Exception):\n    pass\n")
        sys.path.insert(0, folder)
        raise importlib.import_module("job_only_module").Unimportable("only on the cluster")

    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(raise_local_class)
        with pytest.raises(RemoteError, match="only on the cluster") as caught:
            await future
        assert caught.value.exc_type.endswith("Unimportable")
        assert "raise_local_class" in caught.value.remote_traceback


async def test_map_and_as_completed(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        futures = await session.map(add, range(12), [10] * 12)
        seen = [f async for f in session.as_completed(futures)]
        assert len(seen) == len(futures)
        assert {id(f) for f in seen} == {id(f) for f in futures}
        assert [await f for f in futures] == [i + 10 for i in range(12)]


async def test_stdout_and_stderr_of_a_job(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(chatty, ("hello cluster",))
        assert await future == len("hello cluster")
        assert "hello cluster" in await future.stdout()
        assert "warning: hello cluster" in await future.stderr()


async def test_spec_options_variables_and_prerun_reach_the_job(session_kwargs: dict[str, Any]) -> None:
    def report() -> tuple[str | None, str | None, str]:
        return (
            os.environ.get("SB_GREETING"),
            os.environ.get("SLURM_CPUS_PER_TASK"),
            Path("marker").read_text(),
        )

    spec = JobSpec(
        options={"cpus-per-task": 2},
        variables={"SB_GREETING": "it's a 'quoted' $value"},
        prerun_commands=["echo prerun > marker"],
        job_name="sb-report",
    )
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(report, spec=spec)
        assert await future == ("it's a 'quoted' $value", "2", "prerun\n")


async def test_many_concurrent_submits_share_one_connection(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    futures: list[Any] = []
    async with SlurmSession("127.0.0.1", **{**session_kwargs, "max_connections": 1}) as session:

        async def submit(i: int) -> None:
            futures.append(await session.submit(add, (i, 1)))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(submit, i)
        assert len({f.job_id for f in futures}) == 200
        assert sorted([await f for f in futures]) == [i + 1 for i in range(200)]
    assert mark.logins() == 1
    assert mark.refused_sessions() == 0


async def test_status_is_one_scheduler_query_per_interval(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    held = JobSpec(options={"hold": True})
    async with SlurmSession("127.0.0.1", **{**session_kwargs, "status_interval": (1.0, 1.0)}) as session:
        futures = await session.map(add, range(300), range(300), spec=held)
        before = sdiag_count(slurm_cluster, "REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE")
        queries_before = session._poller.scheduler_queries
        started = anyio.current_time()
        await anyio.sleep(5)
        elapsed = anyio.current_time() - started
        queries = session._poller.scheduler_queries - queries_before
        rpcs = sdiag_count(slurm_cluster, "REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE") - before
        assert all(f.state is JobState.PENDING for f in futures)
        # One query per 1 s interval for 300 live jobs: never one per job.
        assert 3 <= queries <= math.ceil(elapsed) + 1
        # Each query is one job-info RPC (the sdiag call itself adds none of that type). A query counted
        # just before the window, when its command was built, may reach slurmctld inside it.
        assert rpcs <= queries + 1
        await futures[0].cancel()
        with pytest.raises(JobCancelled):
            await futures[0]
        session.detach()
        login_shell(slurm_cluster, "scancel " + " ".join(f.job_id for f in futures))


async def test_cancel_one_job(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(slow, (300,))
        assert await future.cancel() is True
        with pytest.raises(JobCancelled) as caught:
            await future
        assert caught.value.job_id == future.job_id
        assert future.state is JobState.CANCELLED
        assert await future.cancel() is False


async def test_cancelling_the_waiter_leaves_the_job_running(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(slow, (2,))
        with anyio.move_on_after(0.2) as scope:
            await future
        assert scope.cancelled_caught
        assert not future.done()
        assert await future == "slept"


async def test_error_in_block_cancels_live_jobs_in_one_call(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    futures: list[Any] = []
    cancels_before = sdiag_count(slurm_cluster, "REQUEST_KILL_JOB")
    with pytest.raises(ZeroDivisionError):
        async with SlurmSession("127.0.0.1", **session_kwargs) as session:
            # Separate jobs, so that squeue keeps a CANCELLED record of each (pending array tasks that
            # are cancelled leave none).
            futures = await session.map(slow, [300] * 5, spec=JobSpec(coalesce=False))
            1 / 0  # noqa: B018
    for future in futures:
        assert isinstance(future.exception(), JobCancelled)
    ids = ",".join(f.job_id for f in futures)
    states = login_shell(slurm_cluster, f"squeue -h -t all -j {ids} -o %T").split()
    assert states == ["CANCELLED"] * 5
    # One scancel call for five jobs (scancel sends one kill RPC per job id it is given).
    assert sdiag_count(slurm_cluster, "REQUEST_KILL_JOB") - cancels_before == 5


async def test_cancelling_the_session_block_cancels_its_jobs(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    futures: list[Any] = []
    with anyio.move_on_after(8) as scope:
        async with SlurmSession("127.0.0.1", **session_kwargs) as session:
            futures = await session.map(slow, [300] * 3, spec=JobSpec(coalesce=False))
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert len(futures) == 3
    assert all(isinstance(f.exception(), JobCancelled) for f in futures)
    ids = ",".join(f.job_id for f in futures)
    assert login_shell(slurm_cluster, f"squeue -h -t all -j {ids} -o %T").split() == ["CANCELLED"] * 3


async def test_leaving_normally_waits_for_jobs(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(slow, (1,))
    assert future.done()
    assert await future == "slept"
    with pytest.raises(SessionClosedError):
        await session.submit(add, (1, 2))


async def test_detach_lets_jobs_outlive_the_block(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(slow, (30,))
        assert session.detach() == [future.job_id]
    # Awaited after the block, the future says the job was detached and how to collect it; no hang.
    with anyio.fail_after(10), pytest.raises(SessionClosedError, match="detached") as caught:
        await future
    assert f"reattach({session.id!r})" in str(caught.value)
    state = login_shell(slurm_cluster, f"squeue -h -j {future.job_id} -o %T").strip()
    assert state in ("PENDING", "RUNNING")
    login_shell(slurm_cluster, f"scancel {future.job_id}")


async def test_ssh_config_alias_is_honoured(slurm_cluster: ClusterSettings) -> None:
    async with SlurmSession(
        slurm_cluster.ssh_alias,
        ssh_config=slurm_cluster.ssh_config,
        remote_workdir=slurm_cluster.remote_workdir,
        python=slurm_cluster.python,
    ) as session:
        assert await (await session.submit(add, (2, 3))) == 5


async def test_remote_workdir_is_private(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        await (await session.submit(add, (1, 1)))
    mode = login_shell(slurm_cluster, f"stat -c %a {slurm_cluster.remote_workdir}").strip()
    assert mode == "700"


async def test_multi_task_job_runs_every_task_and_returns_rank_zero(session_kwargs: dict[str, Any]) -> None:
    def rank_report() -> tuple[str | None, str]:
        return os.environ.get("SLURM_PROCID"), socket.gethostname()

    def fail_on_rank_one() -> str:
        if os.environ.get("SLURM_PROCID") == "1":
            raise SimulationDiverged("rank 1 diverged")
        return "rank 0 fine"

    def node_per_rank() -> str:
        marker = Path(f"rank-seen-{os.environ['SLURM_JOB_ID']}-{os.environ['SLURM_PROCID']}")
        marker.write_text(os.environ["SLURMD_NODENAME"])
        return os.environ["SLURMD_NODENAME"]

    spec = JobSpec(options={"nodes": 2, "ntasks": 2}, use_srun=True)
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        assert (await (await session.submit(rank_report, spec=spec)))[0] == "0"
        with pytest.raises(SimulationDiverged, match="rank 1 diverged"):
            await (await session.submit(fail_on_rank_one, spec=spec))
        probe = await session.submit(node_per_rank, spec=spec)
        assert await probe == "node1"
        seen = await session.submit(
            lambda job: sorted(
                Path(p).read_text() for p in os.listdir(".") if p.startswith(f"rank-seen-{job}-")
            ),
            (probe.job_id,),
        )
        assert await seen == ["node1", "node2"]
