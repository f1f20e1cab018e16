"""Which ended jobs are submitted again, how often, and what a refused retry leaves the future with."""

from __future__ import annotations

import logging
import sys
from typing import Any

import anyio
import pytest

from slurmbatch import JobCancelled, JobNodeFailure, JobPreempted, JobSpec, JobTimeout, SubmissionError
from slurmbatch._retries import Retries
from slurmbatch._submit_requests import SubmitRequest
from slurmbatch.future import JobFuture
from slurmbatch.payload import ArgumentStore, pack_function

pytestmark = pytest.mark.anyio


class Submissions:
    """Stands in for the submitter: takes each request and answers it with the next job id."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.requests: list[SubmitRequest] = []
        self.refuse = refuse
        self.given_up: list[tuple[JobFuture[Any], BaseException]] = []
        self.cancelled: list[str] = []  # job ids scancelled

    async def submit(self, request: SubmitRequest) -> None:
        self.requests.append(request)
        if self.refuse:
            raise SubmissionError("sbatch refused the job: Invalid partition name specified")
        assert request.future is not None
        request.future._retried(str(100 + len(self.requests)))

    def give_up(self, future: JobFuture[Any], error: BaseException) -> None:
        self.given_up.append((future, error))

    async def cancel(self, futures: Any) -> None:
        self.cancelled.extend(f.job_id for f in futures)


def submitted(spec: JobSpec, job_id: str = "100") -> tuple[SubmitRequest, JobFuture[Any]]:
    request = SubmitRequest(pack_function(len), ArgumentStore().pack(("ab",), {}), spec)
    request.future = JobFuture(None, job_id=job_id, token="sb-test")  # type: ignore[arg-type]
    return request, request.future


def node_failure() -> JobNodeFailure:
    return JobNodeFailure("node lost", job_id="100", state="NODE_FAIL")


async def retried(spec: JobSpec, errors: list[BaseException], submissions: Submissions) -> list[bool]:
    request, future = submitted(spec)
    taken = []
    async with anyio.create_task_group() as tg:
        retries = Retries(
            submit=submissions.submit, give_up=submissions.give_up, cancel=submissions.cancel, task_group=tg
        )
        retries.remember(request)
        for error in errors:
            taken.append(retries.take(future, error))
            await anyio.wait_all_tasks_blocked()
    return taken


async def test_a_node_failure_is_retried_up_to_retries_times_under_the_same_token(anyio_backend: str) -> None:
    submissions = Submissions()
    taken = await retried(JobSpec(retries=2), [node_failure()] * 3, submissions)
    assert taken == [True, True, False]
    assert [r.token for r in submissions.requests] == ["sb-test", "sb-test"]
    future = submissions.requests[0].future
    assert future is not None and future.attempts == ("100", "101", "102")


async def test_only_the_outcomes_named_in_retry_on_are_retried(anyio_backend: str) -> None:
    timeout = JobTimeout("too long", job_id="100", state="TIMEOUT")
    assert await retried(JobSpec(retries=3), [ValueError("in the function")], Submissions()) == [False]
    assert await retried(JobSpec(retries=3), [timeout], Submissions()) == [False]
    assert await retried(JobSpec(retries=3, retry_on=(JobTimeout,)), [timeout], Submissions()) == [True]
    assert await retried(
        JobSpec(retries=3, retry_on=(ArithmeticError,)), [ZeroDivisionError()], Submissions()
    ) == [True]
    assert await retried(JobSpec(retries=0), [node_failure()], Submissions()) == [False]
    preempted = JobPreempted("preempted", job_id="100", state="PREEMPTED")
    assert await retried(JobSpec(retries=1), [preempted], Submissions()) == [True]


async def test_a_refused_retry_resolves_the_future_with_the_first_error_and_why(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    submissions = Submissions(refuse=True)
    error = node_failure()
    with caplog.at_level(logging.WARNING, logger="slurmbatch"):
        assert await retried(JobSpec(retries=1), [error], submissions) == [True]
    ((future, given),) = submissions.given_up
    assert given is error and future.token == "sb-test" and future.attempts == ("100",)
    assert any("was not retried: sbatch refused the job" in r.getMessage() for r in caplog.records)
    if sys.version_info >= (3, 11):  # exceptions carry notes from 3.11 on
        assert "It was not submitted again: sbatch refused the job" in "".join(error.__notes__)


async def test_a_call_cancelled_before_its_retry_is_submitted_is_never_submitted_again(
    anyio_backend: str,
) -> None:
    submissions = Submissions()
    request, future = submitted(JobSpec(retries=3))
    async with anyio.create_task_group() as tg:
        retries = Retries(
            submit=submissions.submit, give_up=submissions.give_up, cancel=submissions.cancel, task_group=tg
        )
        retries.remember(request)
        assert retries.take(future, node_failure()) is True
        retries.cancelled([future])  # before the retry's task ran
        await anyio.wait_all_tasks_blocked()
        assert retries.take(future, node_failure()) is False  # nor any later outcome
    assert submissions.requests == [] and submissions.cancelled == []
    ((given_up, error),) = submissions.given_up
    assert given_up is future and isinstance(error, JobCancelled) and future.attempts == ("100",)
