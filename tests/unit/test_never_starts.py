"""When a pending job whose reason says it can never start is given up."""

from __future__ import annotations

from slurmbatch._scheduler_queries import NeverStartWatch
from slurmbatch.slurm.states import MAY_CLEAR, NEVER_STARTS, JobState, JobStatus


def pending(reason: str) -> JobStatus:
    return JobStatus(JobState.PENDING, reason=reason)


def test_a_reason_that_never_clears_gives_the_job_up_at_once() -> None:
    assert NeverStartWatch().doomed("t", pending("PartitionTimeLimit"), now=0.0)


def test_a_reason_that_may_be_temporary_must_persist_over_queries_and_time() -> None:
    assert {"PartitionNodeLimit", "BadConstraints"} <= MAY_CLEAR <= set(NEVER_STARTS)
    watch = NeverStartWatch(queries=3, seconds=60.0)
    status = pending("PartitionNodeLimit")  # e.g. while the nodes it needs are down
    assert not watch.doomed("t", status, now=0.0)
    assert not watch.doomed("t", status, now=5.0)
    assert not watch.doomed("t", status, now=10.0)  # three queries, but only 10 s
    assert watch.doomed("t", status, now=61.0)


def test_a_temporary_reason_that_clears_starts_the_count_again() -> None:
    watch = NeverStartWatch(queries=2, seconds=10.0)
    assert not watch.doomed("t", pending("BadConstraints"), now=0.0)
    assert not watch.doomed("t", pending("Resources"), now=20.0)  # the nodes came back
    assert not watch.doomed("t", pending("BadConstraints"), now=30.0)
    assert not watch.doomed("t", pending("BadConstraints"), now=35.0)
    assert watch.doomed("t", pending("BadConstraints"), now=41.0)


def test_running_jobs_are_never_given_up() -> None:
    watch = NeverStartWatch(queries=1, seconds=0.0)
    assert not watch.doomed("t", JobStatus(JobState.RUNNING, reason="PartitionTimeLimit"), now=0.0)
