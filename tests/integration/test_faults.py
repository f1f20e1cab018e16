"""Real faults on the real local cluster: nothing is lost, nothing is submitted twice.

Each test injects its fault while jobs are submitted and run, then checks every result, counts the jobs
slurmctld recorded per submission (the job completion file), and looks for jobs left running. Each adds
a row to the fault table printed at the end of the run.
"""

from __future__ import annotations

import collections
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import (
    ConnectError,
    JobFailed,
    JobFuture,
    JobOutOfMemory,
    JobSpec,
    JobState,
    PayloadError,
    SlurmSession,
)
from slurmbatch.testing import ClusterSettings, LocalCluster
from slurmbatch.testing.pytest_plugin import extra_cluster

from .conftest import login_shell, requeue_and_restart, session_options
from .fault_table import ROWS, FaultRow

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOBS = 200


def work(i: int) -> int:
    time.sleep(0.3)
    return i * i


def slow_square(i: int) -> int:
    time.sleep(4)
    return i * i


def write_a_truncated_result() -> None:
    # What a full disk or a node dying mid-write leaves behind: the first bytes of a pickle, no more.
    result = next(arg for arg in sys.argv if "/results/" in arg)
    with open(result + ".part", "wb") as file:
        file.write(cloudpickle.dumps(("ok", list(range(1000))))[:40])
    os.replace(result + ".part", result)
    os._exit(0)


def hog_memory(megabytes: int) -> int:
    import time

    blocks = [bytearray(megabytes * 2**20)]
    blocks[0][:: 2**12] = b"x" * len(blocks[0][:: 2**12])  # touch every page: it must be resident
    time.sleep(10)  # the node samples memory use every second
    return len(blocks)


@pytest.fixture(scope="module")
def memory_cluster() -> Iterator[ClusterSettings]:
    """A one-node cluster that kills jobs using more memory than they asked for."""
    cluster = extra_cluster("test-cluster-memory", nodes=1, enforce_memory=True, min_job_age=10)
    yield cluster.up()
    cluster.down()


def job_token(future: JobFuture[Any]) -> str:
    return future.token.split(".", 1)[0]


def recorded_jobs(cluster: ClusterSettings, futures: list[JobFuture[Any]]) -> collections.Counter[str]:
    """How many job records slurmctld wrote per submission (job name), from the job completion file."""
    tokens = {job_token(f) for f in futures}
    names = login_shell(cluster, "sacct -c -n -P -X -o JobName%200 2>/dev/null").split()
    return collections.Counter(_token_of_name(n) for n in names if _token_of_name(n) in tokens)


def _token_of_name(job_name: str) -> str:
    # Job names are "<function>-<token>", and tokens look like "sb-<16 hex digits>".
    return job_name[-19:]


async def duplicates_and_orphans(cluster: ClusterSettings, futures: list[JobFuture[Any]]) -> tuple[int, int]:
    """Job records beyond one per future (each array task has its own), and jobs still in squeue."""
    expected = collections.Counter(job_token(f) for f in futures)
    for _ in range(50):  # the completion file is written as jobs end
        recorded = recorded_jobs(cluster, futures)
        if all(recorded[t] >= n for t, n in expected.items()):
            break
        await anyio.sleep(0.2)
    duplicates = sum(max(0, recorded[t] - n) for t, n in expected.items())
    missing = sum(max(0, n - recorded[t]) for t, n in expected.items())
    assert missing == 0, f"{missing} job(s) never reached the job completion file"
    tokens = set(expected)
    live = login_shell(cluster, "squeue -h -o %200j").split()
    orphaned = sum(1 for name in live if _token_of_name(name) in tokens)
    return duplicates, orphaned


async def run_through_fault(
    session: SlurmSession,
    inject: Callable[[], Awaitable[None]],
    recovered: Callable[[float], bool],
    *,
    jobs: int = JOBS,
) -> tuple[list[JobFuture[int]], list[int], float]:
    """Submit ``jobs`` calls of ``work`` (half concurrent submits, half a map) while ``inject`` runs;
    return the futures, their results, and the seconds from the fault until ``recovered(fault_time)``."""
    futures: list[JobFuture[int]] = []
    recovery = math.nan

    async def fault() -> None:
        nonlocal recovery
        await inject()
        at = anyio.current_time()
        for _ in range(2400):
            if recovered(at):
                recovery = anyio.current_time() - at
                return
            await anyio.sleep(0.05)
        raise AssertionError("the session did not recover within 120 s of the fault")

    async def submit_one(i: int) -> None:
        futures.append(await session.submit(work, (i,)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(fault)
        async with anyio.create_task_group() as submits:
            for i in range(jobs // 2):
                submits.start_soon(submit_one, i)
        futures += await session.map(work, range(jobs // 2, jobs))
    results = [await f for f in futures]
    return futures, results, recovery


def reconnected(session: SlurmSession) -> Callable[[float], bool]:
    """Recovered: a connection opened after the fault has carried a command of the status loop."""
    opened = session._pool.stats.connections_opened
    return lambda at: session._pool.stats.connections_opened > opened and session._poller.last_success > at


async def nothing_lost(
    cluster: ClusterSettings,
    fault: str,
    backend: str,
    futures: list[Any],
    results: list[int],
    recovery: float,
) -> None:
    """Every result of a run through a fault came back, nothing ran twice, nothing was left running;
    the fault's row goes into the table either way."""
    assert sorted(results) == sorted(f * f for f in range(JOBS))
    duplicates, orphaned = await duplicates_and_orphans(cluster, futures)
    record(fault, backend, futures, results, duplicates, orphaned, recovery)
    assert (duplicates, orphaned) == (0, 0)


def record(
    fault: str, backend: str, futures: list[Any], results: list[Any], dup: int, orphans: int, s: float
) -> None:
    ROWS.append(FaultRow(fault, backend, len(futures), len(results), dup, orphans, s))


async def test_connections_killed_repeatedly_during_a_200_job_run(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, anyio_backend: str
) -> None:
    dropped: list[int] = []

    async def kill_connections() -> None:
        for pause in (0.2, 0.8, 1.5, 2.5):
            await anyio.sleep(pause)
            dropped.append(await anyio.to_thread.run_sync(local_cluster.drop_ssh_connections))

    options = session_options(slurm_cluster, reconnect_deadline=60)
    async with SlurmSession("127.0.0.1", **options) as session:
        futures, results, recovery = await run_through_fault(session, kill_connections, reconnected(session))
        lost = session._pool.stats.connections_lost
    assert sum(dropped) >= 4 and lost >= 1, (dropped, lost)
    assert all(f.state is JobState.COMPLETED for f in futures)
    await nothing_lost(slurm_cluster, "SSH connections killed 4x", anyio_backend, futures, results, recovery)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sshd_restarted_during_a_run(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, anyio_backend: str
) -> None:
    async def restart_sshd() -> None:
        await anyio.sleep(0.5)
        # The login node's sshd restarted, and the connections it served gone with it (a reboot).
        dropped = await anyio.to_thread.run_sync(local_cluster.drop_ssh_connections)
        await anyio.to_thread.run_sync(local_cluster.restart_daemon, f"sshd-{slurm_cluster.port}")
        assert dropped >= 1

    async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, reconnect_deadline=60)) as session:
        futures, results, recovery = await run_through_fault(session, restart_sshd, reconnected(session))
    await nothing_lost(slurm_cluster, "sshd restarted", anyio_backend, futures, results, recovery)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_slurmctld_restarted_during_a_run(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, anyio_backend: str
) -> None:
    async def restart_slurmctld() -> None:
        await anyio.sleep(0.3)
        await anyio.to_thread.run_sync(local_cluster.restart_daemon, "slurmctld")

    options = session_options(slurm_cluster, reconnect_deadline=60, status_interval=(0.3, 1.0))
    async with SlurmSession("127.0.0.1", **options) as session:
        # Recovered: the scheduler answered a status query again.
        futures, results, recovery = await run_through_fault(
            session, restart_slurmctld, lambda at: session._poller.last_answer > at
        )
    await nothing_lost(
        slurm_cluster, "slurmctld restarted (state kept)", anyio_backend, futures, results, recovery
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_truncated_result_file_fails_its_job_plainly_and_is_not_rerun(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    async with SlurmSession("127.0.0.1", **session_options(slurm_cluster)) as session:
        broken = await session.submit(write_a_truncated_result)
        fine = await session.submit(work, (7,))
        with pytest.raises(PayloadError, match=r"(?i)result.*(truncated|incomplete|damaged)") as caught:
            await broken
        assert broken.job_id in str(caught.value)
        assert await fine == 49
        sbatch_calls = session._submitter.sbatch_calls
    assert sbatch_calls == 2  # nothing was submitted again
    duplicates, orphaned = await duplicates_and_orphans(slurm_cluster, [broken, fine])
    record("result file truncated", anyio_backend, [broken, fine], [49], duplicates, orphaned, 0.0)
    assert (duplicates, orphaned) == (0, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_workdir_removed_under_running_and_pending_jobs(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    workdir = f"{slurm_cluster.remote_workdir}/removed-{os.getpid()}"
    options = session_options(slurm_cluster, remote_workdir=workdir, status_interval=(0.3, 1.0))
    async with SlurmSession("127.0.0.1", **options) as session:
        running = await session.map(slow_square, range(3))
        held = await session.submit(work, (2,), JobSpec(options={"hold": True}))
        await anyio.sleep(1.5)
        started = anyio.current_time()
        login_shell(slurm_cluster, f"rm -rf {workdir}")
        # The session notices, recreates the directory, and says which jobs lost their files.
        for _ in range(300):
            if login_shell(slurm_cluster, f"test -d {workdir}/results && echo back || true").strip():
                break
            await anyio.sleep(0.1)
        recovery = anyio.current_time() - started
        login_shell(slurm_cluster, f"scontrol release {held.job_id}")
        with anyio.fail_after(60):
            outcomes = [await _outcome(f) for f in [*running, held]]
        # Running jobs had read their inputs: they may still deliver. None hangs; a job that could not
        # deliver fails with an error that says where its files went.
        for i, outcome in enumerate(outcomes[:3]):
            assert outcome == i * i or (isinstance(outcome, JobFailed) and "work directory" in str(outcome))
        assert isinstance(outcomes[3], JobFailed), outcomes[3]
        assert "was removed while the job was queued or running" in str(outcomes[3])
        # Later jobs run: the function and the runner were uploaded again.
        assert await (await session.submit(work, (3,))) == 9
    futures = [*running, held]
    results = [o for o in outcomes if not isinstance(o, Exception)]
    duplicates, orphaned = await duplicates_and_orphans(slurm_cluster, futures)
    record(
        "remote workdir removed under jobs", anyio_backend, futures, results, duplicates, orphaned, recovery
    )
    assert (duplicates, orphaned) == (0, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_requeued_job_still_gives_its_one_result(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    async with SlurmSession(
        "127.0.0.1", **session_options(slurm_cluster, status_interval=(0.3, 1.0))
    ) as session:
        future = await session.submit(slow_square, (5,), JobSpec(options={"requeue": True}))
        for _ in range(100):
            if future.state is JobState.RUNNING:
                break
            await anyio.sleep(0.1)
        # What preemption with PreemptMode=REQUEUE, or an administrator, does to a running job.
        await requeue_and_restart(slurm_cluster, future.job_id)
        with anyio.fail_after(120):
            assert await future == 25
        sbatch_calls = session._submitter.sbatch_calls
    assert sbatch_calls == 1
    live = login_shell(slurm_cluster, "squeue -h -o %i").split()
    assert future.job_id not in live
    ROWS.append(FaultRow("job requeued while running", anyio_backend, 1, 1, 0, 0, 0.0))


async def _outcome(future: JobFuture[Any]) -> Any:
    try:
        return await future
    except Exception as exc:
        return exc


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_job_over_its_memory_is_killed_and_says_so(
    memory_cluster: ClusterSettings, anyio_backend: str
) -> None:
    async with SlurmSession("127.0.0.1", **session_options(memory_cluster)) as session:
        greedy = await session.submit(hog_memory, (400,), JobSpec(options={"mem": "100M"}))
        modest = await session.submit(work, (4,), JobSpec(options={"mem": "200M"}))
        with anyio.fail_after(120), pytest.raises(JobOutOfMemory, match="Ask for more memory") as caught:
            await greedy
        assert "Exceeded job memory limit" in caught.value.stderr_tail
        assert greedy.state is JobState.OUT_OF_MEMORY
        assert await modest == 16
    ROWS.append(FaultRow("job over its memory (JobOutOfMemory)", anyio_backend, 2, 1, 0, 0, 0.0))


def identity(i: int) -> int:
    return i


def resident_megabytes() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_5000_jobs_through_one_session_in_bounded_memory(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    peak = before = resident_megabytes()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, resident_megabytes())
            await anyio.sleep(0.5)

    options = session_options(slurm_cluster, max_connections=1)
    async with SlurmSession("127.0.0.1", **options) as session, anyio.create_task_group() as tg:
        tg.start_soon(sample)
        started = anyio.current_time()
        futures = await session.map(identity, range(5000))
        results = [await f for f in futures]
        elapsed = anyio.current_time() - started
        tg.cancel_scope.cancel()
    assert results == list(range(5000))
    growth = peak - before
    print(f"5000 jobs in {elapsed:.0f} s; client resident memory grew {growth:.0f} MB at most")
    assert growth < 150, f"the client grew by {growth:.0f} MB for 5000 jobs"
    ROWS.append(
        FaultRow("load: 5000 jobs, one session, one connection", anyio_backend, 5000, 5000, 0, 0, 0.0)
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_futures_fail_with_a_connect_error_once_the_outage_outlasts_the_deadline(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, anyio_backend: str
) -> None:
    port = local_cluster.start_sshd()
    options = session_options(slurm_cluster, port=port, reconnect_deadline=3)
    async with SlurmSession("127.0.0.1", **options) as session:
        future = await session.submit(slow_square, (6,))
        # The login node goes away for good: its sshd stops, and the connections it served drop.
        local_cluster.drop_ssh_connections(port)
        local_cluster.stop_daemon(f"sshd-{port}")
        lost_at = anyio.current_time()
        try:
            with anyio.fail_after(60), pytest.raises(ConnectError, match="reconnect_deadline=3") as caught:
                await future
            waited = anyio.current_time() - lost_at
            assert waited >= 3, waited
            assert "127.0.0.1" in str(caught.value)
            session.detach()  # nothing more can be done through this login node
        finally:
            local_cluster.restart_daemon(f"sshd-{port}")
    login_shell(slurm_cluster, f"scancel {future.job_id}")
