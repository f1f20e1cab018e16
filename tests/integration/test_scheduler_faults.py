"""Schedulers that misbehave, made real: Slurm's own commands wrapped first on the job user's PATH.

Each test wraps squeue, sacct or sbatch (see :mod:`slurmbatch.testing.wrappers`) on the real local
cluster, runs jobs through it, and checks that every result came back, that slurmctld created exactly one
job per submission, and that nothing was left in the queue. Each adds a row to the fault table.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobFailed, JobFuture, JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.wrappers import ZERO_BYTES, SlurmWrappers

from .conftest import login_shell, session_options
from .fault_table import ROWS, FaultRow
from .test_faults import duplicates_and_orphans

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOBS = 12


def square(i: int) -> int:
    time.sleep(0.2)
    return i * i


def slow_square(i: int) -> int:
    time.sleep(6)
    return i * i


@pytest.fixture
def wrappers() -> Iterator[SlurmWrappers]:
    # Under /tmp, not pytest's tmp_path: the job user must be able to reach it.
    directory = Path(tempfile.mkdtemp(prefix="slurm-wrappers-", dir="/tmp"))
    directory.chmod(0o755)
    yield SlurmWrappers.create(directory / "bin")
    shutil.rmtree(directory, ignore_errors=True)


async def run_jobs(session: SlurmSession, jobs: int = JOBS) -> tuple[list[JobFuture[int]], list[int]]:
    """Half the jobs as concurrent submits, half as one map; wait for every result."""
    futures: list[JobFuture[int]] = []

    async def submit_one(i: int) -> None:
        futures.append(await session.submit(square, (i,)))

    async with anyio.create_task_group() as tg:
        for i in range(jobs // 2):
            tg.start_soon(submit_one, i)
    futures += await session.map(square, range(jobs // 2, jobs))
    with anyio.fail_after(120):
        results = [await f for f in futures]
    return futures, results


async def check_and_record(
    cluster: ClusterSettings, fault: str, backend: str, futures: list[Any], results: list[int], seconds: float
) -> None:
    duplicates, orphaned = await duplicates_and_orphans(cluster, futures)
    ROWS.append(FaultRow(fault, backend, len(futures), len(results), duplicates, orphaned, seconds))
    assert sorted(results) == [i * i for i in range(len(futures))]
    assert (duplicates, orphaned) == (0, 0)


async def test_a_hung_squeue_holds_back_no_result_nor_the_sessions_end(
    slurm_cluster: ClusterSettings, wrappers: SlurmWrappers, anyio_backend: str
) -> None:
    wrappers.slow("squeue", seconds=100)
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines)
    started = anyio.current_time()
    async with SlurmSession("127.0.0.1", **options) as session:
        futures, results = await run_jobs(session)
        results_at = anyio.current_time()
        queries = session._poller.scheduler_queries
        leaving = anyio.current_time()
    left = anyio.current_time() - leaving
    assert queries >= 1  # a query was sent, and hung: the results came without it
    assert results_at - started < 60, results_at - started
    assert left < 20, f"leaving the session took {left:.0f} s behind a hung squeue"
    await check_and_record(slurm_cluster, "squeue hangs 100 s", anyio_backend, futures, results, left)


async def test_a_hung_query_is_abandoned_and_asked_again(
    slurm_cluster: ClusterSettings, wrappers: SlurmWrappers, anyio_backend: str
) -> None:
    wrappers.slow("squeue", seconds=100, times=1)
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines)
    async with SlurmSession("127.0.0.1", **options) as session:
        session._poller.status.timeout = 3.0
        # Ends without a result: only the scheduler can tell, so the hung query must be given up.
        broken = await session.submit(square, (1,), JobSpec(prerun_commands=["exit 3"]))
        with anyio.fail_after(60), pytest.raises(JobFailed) as failed:
            await broken
        assert failed.value.exit_code == 3
        assert session._poller.status.timeouts >= 1
    assert wrappers.calls("squeue") == 1
    ROWS.append(FaultRow("squeue hangs once (query timed out, asked again)", anyio_backend, 1, 0, 0, 0, 0.0))


async def test_a_failing_sacct_leaves_squeues_answers_standing(
    slurm_cluster: ClusterSettings, wrappers: SlurmWrappers, anyio_backend: str
) -> None:
    wrappers.failing("sacct")
    # Queries only when asked (the first one comes with the first job).
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines, status_interval=(300, 300))
    async with SlurmSession("127.0.0.1", **options) as session:
        futures, results = await run_jobs(session)
        # A job squeue forgets before the session hears how it ended: only sacct (failing) could tell.
        forgotten = await session.submit(square, (1,), JobSpec(options={"hold": True}))
        login_shell(slurm_cluster, f"scancel {forgotten.job_id}")
        await until_squeue_says(slurm_cluster, forgotten.job_id, "")
        # And a job that ends without a result while squeue still knows it.
        broken = await session.submit(square, (1,), JobSpec(prerun_commands=["exit 4"]))
        await until_squeue_says(slurm_cluster, broken.job_id, "FAILED")
        session._poller.request_status()
        # Each later query asks squeue about one and sacct about the other: squeue's answer stands.
        with anyio.fail_after(60), pytest.raises(JobFailed) as failed:
            await broken
        assert failed.value.exit_code == 4
        assert not forgotten.done()  # its fate is unknown while sacct fails: nothing was concluded
        wrappers.remove("sacct")  # sacct answers again: now it is learnt
        session._poller.request_status()
        with anyio.fail_after(60), pytest.raises(JobCancelled):
            await forgotten
    await check_and_record(slurm_cluster, "sacct fails (exit 1)", anyio_backend, futures, results, 0.0)


async def until_squeue_says(cluster: ClusterSettings, job_id: str, state: str) -> None:
    """Wait until squeue shows job ``job_id`` in ``state`` ("": not at all any more)."""
    for _ in range(120):
        seen = login_shell(cluster, f"squeue -h -t all -j {job_id} -o %T 2>/dev/null || true").strip()
        if seen == state:
            return
        await anyio.sleep(0.5)
    raise AssertionError(f"squeue still says {seen!r} of job {job_id}, not {state!r}")


async def test_a_status_command_whose_shell_died_is_no_answer(
    slurm_cluster: ClusterSettings, wrappers: SlurmWrappers, anyio_backend: str
) -> None:
    # squeue's shell dies under it for the first queries: the reply ends early, which must not read as
    # "the scheduler knows none of these jobs" (the job would be failed while it runs).
    wrappers.killing_its_shell("squeue", times=4)
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines, status_interval=(0.3, 0.5))
    async with SlurmSession("127.0.0.1", **options) as session:
        future = await session.submit(slow_square, (5,))
        with anyio.fail_after(90):
            assert await future == 25
    assert wrappers.calls("squeue") >= 2
    await check_and_record(
        slurm_cluster, "squeue's shell killed (reply cut short)", anyio_backend, [future], [0], 0.0
    )


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("sbatch times out after creating the job", None),
        ("sbatch: Zero Bytes transmitted, job created", ZERO_BYTES),
    ],
)
async def test_sbatch_that_created_the_job_but_lost_its_answer_submits_once(
    slurm_cluster: ClusterSettings,
    wrappers: SlurmWrappers,
    anyio_backend: str,
    fault: str,
    message: str | None,
) -> None:
    if message is None:
        wrappers.submitted_then_failed(times=4)
    else:
        wrappers.submitted_then_failed(message=message, times=4)
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines)
    async with SlurmSession("127.0.0.1", **options) as session:
        started = anyio.current_time()
        futures, results = await run_jobs(session)
        seconds = anyio.current_time() - started
    assert wrappers.calls("sbatch") >= 1
    await check_and_record(slurm_cluster, fault, anyio_backend, futures, results, seconds)


async def test_sbatch_printing_site_notices_around_the_id(
    slurm_cluster: ClusterSettings, wrappers: SlurmWrappers, anyio_backend: str
) -> None:
    # A site that prints the user's remaining allocation: a number line before the job id.
    notices = ["25 nodes are down for maintenance until Friday", "Core-hours left this quarter:", "51234"]
    wrappers.noisy("sbatch", before=notices, after=["Cite us!"])
    options = session_options(slurm_cluster, slurm_setup=wrappers.setup_lines)
    async with SlurmSession("127.0.0.1", **options) as session:
        futures, results = await run_jobs(session)
        assert all(f.job_id.split("_")[0] != "51234" for f in futures)
    await check_and_record(slurm_cluster, "sbatch prints site notices", anyio_backend, futures, results, 0.0)


async def test_sbatch_variables_of_the_login_environment_do_not_redirect_the_sessions_files(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    elsewhere = f"/tmp/elsewhere-{anyio_backend}"
    setup = [
        f"export SBATCH_OUTPUT={elsewhere}-%j.out",
        f"export SBATCH_ERROR={elsewhere}-%j.err",
        "export SBATCH_ARRAY_INX=0-3",
    ]
    options = session_options(slurm_cluster, slurm_setup=setup)
    async with SlurmSession("127.0.0.1", **options) as session:
        single = await session.submit(square, (3,), JobSpec(prerun_commands=["echo from-the-job >&2"]))
        mapped = await session.map(square, range(3))
        with anyio.fail_after(120):
            assert await single == 9
            assert [await f for f in mapped] == [0, 1, 4]
        assert "from-the-job" in await single.stderr()
        assert "_" not in single.job_id  # not made an array by SBATCH_ARRAY_INX
    ROWS.append(
        FaultRow("SBATCH_OUTPUT/ERROR/ARRAY_INX in the login environment", anyio_backend, 4, 4, 0, 0, 0.0)
    )


def length(text: str) -> int:
    return len(text)


async def test_a_large_maps_argument_table_travels_by_sftp(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    # 300 calls of 4 KB each: a 1.2 MB table, which bash would read from its standard input a byte per
    # system call.
    words = [f"{i:04d}" * 1000 for i in range(300)]
    async with SlurmSession("127.0.0.1", **session_options(slurm_cluster)) as session:
        futures = await session.map(length, words)
        with anyio.fail_after(120):
            assert [await f for f in futures] == [4000] * 300
        assert session._submitter.tables_uploaded == 1
