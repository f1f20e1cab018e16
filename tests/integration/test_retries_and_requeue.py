"""Retries after a node failure, and checkpointed jobs that resume after preemption or their time limit."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobFailed, JobFuture, JobSpec, JobState, SlurmSession
from slurmbatch.checkpointable import ResumeCall
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.pytest_plugin import extra_cluster

from .conftest import session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CPUS = 2  # of the preemption cluster's one node: a job that takes them all leaves no room for another


@pytest.fixture(scope="module")
def preemption_cluster() -> Iterator[ClusterSettings]:
    """One node, two partitions over it: jobs of ``high`` preempt (requeue) those of ``low``."""
    cluster = extra_cluster(
        "test-cluster-preempt", nodes=1, cpus_per_node=CPUS, preemption=True, preempt_grace=5, min_job_age=10
    )
    yield cluster.up()
    cluster.down()


def first_run_waits(marker: str, value: int) -> int:
    """The first attempt waits (for its node to fail under it); a later attempt returns at once."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(300)
    return value


def fails_first_then_waits(marker: str) -> None:
    """The first attempt fails at once; a later one waits (it must be cancelled, never awaited)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)  # the job fails (state FAILED), as a crash would
    time.sleep(300)


def restart_count_after(seconds: float) -> int:
    """Returns how many times Slurm had started the job again before this run; the first run waits
    (to be preempted), a later one ``seconds``."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    time.sleep(seconds if restarts else 300)
    return restarts


class CountingLoop:
    """Counts to ``until`` in steps of ``step`` seconds; a checkpoint resumes from the count so far."""

    def __init__(self) -> None:
        self.done = 0
        self.starts: list[int] = []  # the count each run of the job began with
        self.checkpoints = 0

    def __call__(self, until: int, step: float) -> tuple[int, list[int], int]:
        self.starts.append(self.done)
        while self.done < until:
            time.sleep(step)
            self.done += 1
        return self.done, self.starts, self.checkpoints

    def checkpoint(self, until: int, step: float) -> ResumeCall:
        self.checkpoints += 1
        return self, (until, step), {}


async def admin(cluster: ClusterSettings, *argv: str, check: bool = True) -> None:
    """Run an administrator's command (as root, with the cluster's own config)."""
    env = {"SLURM_CONF": cluster.slurm_conf, "PATH": "/usr/bin:/bin"}
    await anyio.run_process(cluster.admin_argv(list(argv)), env=env, check=check)


async def wait_until(check: Any, what: str) -> None:
    """Wait (up to a minute) until ``check()`` holds; ``what`` names it in the failure."""
    for _ in range(300):
        if check():
            return
        await anyio.sleep(0.2)
    raise AssertionError(f"waited a minute for {what}")


async def test_jobs_whose_node_fails_are_retried_as_new_jobs_of_the_same_future(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    run = uuid.uuid4().hex[:8]
    markers = [f"/tmp/slurmbatch-retry-{run}-{i}" for i in range(3)]
    # No Slurm requeue: the node failure must end the job (NODE_FAIL), so that the session retries it.
    spec = JobSpec(options={"nodelist": "node2", "no-requeue": True}, retries=1)
    async with SlurmSession(
        "127.0.0.1", **session_options(slurm_cluster, status_interval=(0.3, 1.0))
    ) as session:
        single = await session.submit(first_run_waits, (markers[0], 10), spec)
        tasks = await session.map(first_run_waits, markers[1:], [11, 12], spec=spec)
        futures: list[JobFuture[int]] = [single, *tasks]
        assert "_" in tasks[0].job_id  # one array job
        await wait_until(lambda: all(f.state is JobState.RUNNING for f in futures), "running")
        await wait_until(lambda: all(os.path.exists(m) for m in markers), "first attempts started")
        await admin(
            slurm_cluster, "scontrol", "update", "nodename=node2", "state=down", "reason=slurmbatch-retry"
        )
        try:
            await wait_until(lambda: all(len(f.attempts) == 2 for f in futures), "retries submitted")
        finally:
            # ReturnToService=2 may have brought it back already; then there is nothing to resume.
            await admin(slurm_cluster, "scontrol", "update", "nodename=node2", "state=resume", check=False)
        with anyio.fail_after(60):
            values = [await f for f in futures]

    assert values == [10, 11, 12]
    for marker in markers:
        os.unlink(marker)
    for future in futures:
        first, second = future.attempts
        assert first != second and second == future.job_id
        assert "_" not in second  # an array's task is retried as a job of its own


async def test_a_preempted_checkpointable_job_resumes_where_it_was_and_one_without_starts_again(
    preemption_cluster: ClusterSettings, anyio_backend: str
) -> None:
    # Two low-priority jobs of a CPU each fill the node; the urgent job needs both CPUs.
    spec = JobSpec(options={"cpus-per-task": 1}, requeue=True)
    urgent = JobSpec(options={"cpus-per-task": CPUS, "partition": "high"})
    options = session_options(preemption_cluster, status_interval=(0.3, 1.0))
    async with SlurmSession("127.0.0.1", **options) as session:
        loop = await session.submit(CountingLoop(), (100, 0.1), spec)  # 10 s of work
        plain = await session.submit(restart_count_after, (1,), spec)
        await wait_until(
            lambda: loop.state is plain.state is JobState.RUNNING, "the low-priority jobs running"
        )
        await anyio.sleep(2)
        quick = await session.submit(len, ("preempts",), urgent)
        with anyio.fail_after(90):
            assert await quick == 8
            done, starts, checkpoints = await loop
            restarts = await plain

    assert done == 100
    assert checkpoints >= 1
    assert starts[0] == 0 and len(starts) >= 2 and starts[-1] > 0  # resumed from its count, not from 0
    assert loop.attempts == (loop.job_id,)  # requeued by Slurm: one job id throughout
    # Without a checkpoint method the signal is ignored: Slurm requeues the job, which starts again.
    assert restarts >= 1
    assert plain.attempts == (plain.job_id,)


async def test_a_checkpointable_job_at_its_time_limit_requeues_and_finishes(
    preemption_cluster: ClusterSettings, anyio_backend: str
) -> None:
    # slurmctld looks at time limits every 30 s, and sends the signal at the first look that finds less
    # than lead + 30 s left: with a lead of 30 s on a one-minute limit, at its first look, within 30 s
    # of the start, before the 32 s of work are done. Each requeued run is warned at its first look too
    # (about 19 s after it starts again, 11 s after the requeue): the work takes two or three runs.
    spec = JobSpec(options={"time": "0:01"}, requeue=True, signal_lead=30)
    options = session_options(preemption_cluster, status_interval=(0.5, 2.0))
    async with SlurmSession("127.0.0.1", **options) as session:
        loop = await session.submit(CountingLoop(), (320, 0.1), spec)
        with anyio.fail_after(150):
            done, starts, checkpoints = await loop

    assert done == 320
    assert checkpoints >= 1
    assert len(starts) >= 2 and starts[-1] > 0


async def test_a_session_that_reattaches_gets_the_retried_call_with_every_job_id_it_had(
    slurm_cluster: ClusterSettings, anyio_backend: str, tmp_path: Path
) -> None:
    marker = f"/tmp/slurmbatch-retry-{uuid.uuid4().hex[:8]}"
    spec = JobSpec(options={"nodelist": "node2", "no-requeue": True}, retries=1)
    options = session_options(slurm_cluster, status_interval=(0.3, 1.0), journal=tmp_path / "journal.sqlite3")
    async with SlurmSession("127.0.0.1", **options) as first:
        future = await first.submit(first_run_waits, (marker, 7), spec)
        await wait_until(lambda: future.state is JobState.RUNNING and os.path.exists(marker), "running")
        await admin(
            slurm_cluster, "scontrol", "update", "nodename=node2", "state=down", "reason=slurmbatch-retry"
        )
        try:
            await wait_until(lambda: len(future.attempts) == 2, "the retry submitted")
        finally:
            await admin(slurm_cluster, "scontrol", "update", "nodename=node2", "state=resume", check=False)
        first.detach()
    async with SlurmSession("127.0.0.1", **options) as second:
        (again,) = await second.reattach(first.id)
        with anyio.fail_after(60):
            assert await again == 7
    assert again.attempts == future.attempts
    os.unlink(marker)


async def test_a_cancel_while_the_retry_is_submitted_cancels_the_retry_too(
    slurm_cluster: ClusterSettings, anyio_backend: str
) -> None:
    marker = f"/tmp/slurmbatch-retry-{uuid.uuid4().hex[:8]}"
    spec = JobSpec(retries=2, retry_on=(JobFailed,))
    async with SlurmSession(
        "127.0.0.1", **session_options(slurm_cluster, status_interval=(0.3, 1.0))
    ) as session:
        # Hold the retry's submission until the future is cancelled, so the cancel lands mid-retry.
        submitting, cancelled = anyio.Event(), anyio.Event()
        real_submit = session._retries._submit

        async def submit_after_the_cancel(request: Any) -> None:
            submitting.set()
            await cancelled.wait()
            await real_submit(request)

        session._retries._submit = submit_after_the_cancel
        future = await session.submit(fails_first_then_waits, (marker,), spec)
        first_job = future.job_id
        with anyio.fail_after(60):
            await submitting.wait()
        assert await future.cancel() is True
        cancelled.set()
        with anyio.fail_after(60), pytest.raises(JobCancelled) as raised:
            await future

    os.unlink(marker)
    first, retry = future.attempts  # sbatch took the retry, and no further one followed
    assert first == first_job and retry != first_job
    assert raised.value.job_id == retry and future.state is JobState.CANCELLED
