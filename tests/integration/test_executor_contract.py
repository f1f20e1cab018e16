"""SlurmExecutor keeps the concurrent.futures contract, adapted to remote jobs.

Modelled on CPython's test_concurrent_futures (submit, map with a timeout, as_completed, wait,
exceptions, callbacks, shutdown, cancel), against the local cluster. Where the contract differs on
purpose (a running job can be cancelled), the test says so.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from slurmbatch import (
    ConnectError,
    JobFailed,
    JobSpec,
    JobState,
    PayloadError,
    SessionClosedError,
    SlurmExecutor,
    SubmissionError,
    SyncJobFuture,
)
from slurmbatch.testing import ClusterSettings

from .conftest import login_shell, session_options

pytestmark = pytest.mark.cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HELD = JobSpec(options={"hold": True})  # pending in Slurm until cancelled


def add(x: int, y: int = 0) -> int:
    print(f"adding {x} and {y}")
    return x + y


def nap(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def exit_hard(code: int) -> None:
    os._exit(code)


def environment(name: str) -> str | None:
    return os.environ.get(name)


def queued_ids(cluster: ClusterSettings) -> set[str]:
    """Ids of the job user's pending and running jobs (array tasks one by one)."""
    return set(login_shell(cluster, "squeue -h -r -o %i").split())


def leaves_the_queue(cluster: ClusterSettings, job_id: str, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if job_id not in queued_ids(cluster):
            return True
        time.sleep(0.5)
    return False


def wait_until(condition: Any, within: float = 90.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def executor(slurm_cluster: ClusterSettings) -> Iterator[SlurmExecutor]:
    with SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as ex:
        yield ex


@pytest.fixture
def own_executor(slurm_cluster: ClusterSettings) -> Iterator[SlurmExecutor]:
    """An executor a test may shut down."""
    ex = SlurmExecutor("127.0.0.1", **session_options(slurm_cluster))
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------ opening
def test_a_login_node_that_refuses_raises_connect_error_and_leaves_no_thread(
    slurm_cluster: ClusterSettings,
) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ConnectError, match="port 1"):
        SlurmExecutor("127.0.0.1", **session_options(slurm_cluster, port=1, reconnect_deadline=1))
    assert wait_until(lambda: set(threading.enumerate()) <= before, within=10)


def test_bad_options_raise_typed_errors_at_once(slurm_cluster: ClusterSettings) -> None:
    with pytest.raises(TypeError, match="spec must be a JobSpec"):
        SlurmExecutor("127.0.0.1", spec={"time": "1"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status_interval"):
        SlurmExecutor("127.0.0.1", **session_options(slurm_cluster, status_interval=(0, 1)))


# ------------------------------------------------------------------------------------------ submit
def test_submit_returns_a_future_with_the_value_and_the_job(executor: SlurmExecutor) -> None:
    future = executor.submit(add, 2, y=5)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=120) == 7
    assert future.done() and not future.cancelled() and not future.running()
    assert future.exception() is None
    assert future.job_id is not None and future.wait_accepted() == future.job_id
    assert future.state is JobState.COMPLETED
    assert "adding 2 and 5" in future.stdout()
    assert future.stderr() == ""


def test_result_timeout_raises_timeout_error(executor: SlurmExecutor) -> None:
    future = executor.submit(nap, 30)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(timeout=0.2)
    assert future.cancel()


def test_remote_exception_keeps_its_type_and_traceback(executor: SlurmExecutor) -> None:
    future = executor.submit(fail, "bad input 42")
    exc = future.exception(timeout=120)
    assert isinstance(exc, ValueError) and "bad input 42" in str(exc)
    assert "in fail" in exc.remote_traceback  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="bad input 42"):
        future.result()


def test_a_job_that_ends_without_a_result_raises_its_end_state(executor: SlurmExecutor) -> None:
    future = executor.submit(exit_hard, 3)
    with pytest.raises(JobFailed) as failed:
        future.result(timeout=120)
    assert failed.value.exit_code == 3 and failed.value.job_id == future.job_id


def test_an_unpicklable_argument_fails_the_future_with_a_payload_error(executor: SlurmExecutor) -> None:
    future = executor.submit(add, threading.Lock())
    with pytest.raises(PayloadError):
        future.result(timeout=60)
    assert future.job_id is None
    with pytest.raises(PayloadError):
        future.wait_accepted()


def test_calls_queued_together_fail_alone(executor: SlurmExecutor) -> None:
    # Submitted back to back, these leave together; each has its own outcome, unlike a map's calls.
    refused = executor.with_spec(JobSpec(options={"partition": "no-such-partition"}))
    first = executor.submit(add, 1, 2)
    unpicklable = executor.submit(add, threading.Lock())
    bad_partition = refused.submit(add, 3)
    last = executor.submit(add, 4, 5)
    assert first.result(timeout=120) == 3 and last.result(timeout=120) == 9
    with pytest.raises(PayloadError):
        unpicklable.result(timeout=60)
    with pytest.raises(SubmissionError, match="partition"):
        bad_partition.result(timeout=60)


def test_with_spec_shares_the_session_with_another_default(executor: SlurmExecutor) -> None:
    marked = executor.with_spec(JobSpec(variables={"SB_EXECUTOR_MARK": "gpu-ish"}))
    assert marked.session_id == executor.session_id
    assert marked.submit(environment, "SB_EXECUTOR_MARK").result(timeout=120) == "gpu-ish"
    assert executor.submit(environment, "SB_EXECUTOR_MARK").result(timeout=120) is None


# ------------------------------------------------------------------------------------------ map
def test_map_yields_results_in_order(executor: SlurmExecutor) -> None:
    assert list(executor.map(add, range(12), range(12), timeout=180)) == [2 * i for i in range(12)]
    assert list(executor.map(add, [])) == []


def test_map_raises_the_first_failure_in_order(executor: SlurmExecutor) -> None:
    results = executor.map(fail, ["first"])
    with pytest.raises(ValueError, match="first"):
        next(results)


def test_map_timeout_counts_from_the_call_and_cancels_the_rest(
    executor: SlurmExecutor, slurm_cluster: ClusterSettings
) -> None:
    results = executor.map(nap, [0, 60, 60], timeout=20)
    assert next(results) is None
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    # The iterator cancelled the jobs it did not deliver: nothing of this map stays in the queue.
    assert wait_until(lambda: not any(name.startswith("nap-") for name in job_names(slurm_cluster)), 60)


def job_names(cluster: ClusterSettings) -> list[str]:
    return login_shell(cluster, "squeue -h -r -o %j").split()


# ------------------------------------------------------------------------------------------ waiting
def test_as_completed_yields_the_first_finished_first(executor: SlurmExecutor) -> None:
    slow = executor.submit(nap, 120, "slow")
    quick = executor.submit(nap, 0, "quick")
    finished = concurrent.futures.as_completed([slow, quick], timeout=120)
    assert next(finished) is quick
    assert slow.cancel()
    assert next(finished) is slow and slow.cancelled()


def test_as_completed_times_out(executor: SlurmExecutor) -> None:
    slow = executor.submit(nap, 120)
    with pytest.raises(concurrent.futures.TimeoutError):
        list(concurrent.futures.as_completed([slow], timeout=0.5))
    slow.cancel()


def test_wait_first_completed_and_all_completed(executor: SlurmExecutor) -> None:
    slow = executor.submit(nap, 120)
    quick = [executor.submit(add, i) for i in range(3)]
    done, not_done = concurrent.futures.wait(
        [slow, *quick], timeout=120, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done and done <= set(quick) and slow in not_done
    done, not_done = concurrent.futures.wait(quick, timeout=120, return_when=concurrent.futures.ALL_COMPLETED)
    assert done == set(quick) and not not_done
    # A cancel wakes a waiter at once, as the standard library's does.
    waiter = threading.Thread(target=slow.cancel)
    waiter.start()
    done, _ = concurrent.futures.wait([slow], timeout=60)
    waiter.join()
    assert done == {slow} and slow.cancelled()


def test_wait_first_exception(executor: SlurmExecutor) -> None:
    slow = executor.submit(nap, 120)
    failing = executor.submit(fail, "boom")
    done, not_done = concurrent.futures.wait(
        [slow, failing], timeout=120, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert done == {failing} and not_done == {slow}
    slow.cancel()


# ------------------------------------------------------------------------------------------ callbacks
def test_done_callbacks_run_once_in_an_executor_thread(executor: SlurmExecutor) -> None:
    calls: list[tuple[SyncJobFuture[Any], str]] = []
    called = threading.Event()

    def note(future: Any) -> None:
        calls.append((future, threading.current_thread().name))
        called.set()

    future = executor.submit(add, 1, 1)
    future.add_done_callback(note)
    assert called.wait(120)
    assert future.result() == 2
    assert calls == [(future, "slurmbatch-executor-callbacks")]
    # On a finished future the callback runs at once, in the calling thread.
    future.add_done_callback(note)
    assert calls[-1] == (future, threading.current_thread().name) and len(calls) == 2


def test_a_callback_may_block_on_another_future(executor: SlurmExecutor) -> None:
    later = executor.submit(nap, 3, "later")
    seen: list[str] = []
    done = threading.Event()

    def wait_for_later(_: Any) -> None:
        seen.append(later.result(timeout=120))
        done.set()

    first = executor.submit(add, 0)
    first.add_done_callback(wait_for_later)
    assert done.wait(150) and seen == ["later"]


def test_a_callback_that_raises_is_logged_and_the_next_still_runs(
    executor: SlurmExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    ran = threading.Event()

    def broken(_: Any) -> None:
        raise RuntimeError("callback bug")

    future = executor.submit(add, 5)
    future.add_done_callback(broken)
    future.add_done_callback(lambda _: ran.set())
    assert ran.wait(120)
    assert "exception calling callback" in caplog.text and "callback bug" in caplog.text


def test_callbacks_see_a_cancel(executor: SlurmExecutor) -> None:
    future = executor.with_spec(HELD).submit(nap, 0)
    seen: list[bool] = []
    future.add_done_callback(lambda f: seen.append(f.cancelled()))
    future.wait_accepted(timeout=60)
    assert future.cancel()
    assert seen == [True]


def test_a_callback_run_by_cancel_may_submit_and_cancel_again(executor: SlurmExecutor) -> None:
    future = executor.with_spec(HELD).submit(add, 1)
    follow_up: list[SyncJobFuture[int]] = []

    def resubmit(cancelled: Any) -> None:
        assert cancelled.cancel()  # cancelling again from its own callback
        follow_up.append(executor.submit(add, 2))

    future.add_done_callback(resubmit)
    assert future.cancel()
    assert follow_up[0].result(timeout=120) == 3 - 1


# ------------------------------------------------------------------------------------------ cancel
def test_cancel_a_job_pending_in_slurm(executor: SlurmExecutor, slurm_cluster: ClusterSettings) -> None:
    future = executor.with_spec(HELD).submit(add, 1)
    job_id = future.wait_accepted(timeout=60)
    assert job_id in queued_ids(slurm_cluster)
    assert future.cancel() and future.cancel()  # a second cancel is a no-op that still says True
    assert future.cancelled() and future.done() and future.state is JobState.CANCELLED
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
    assert leaves_the_queue(slurm_cluster, job_id)


def test_cancel_a_running_job_unlike_the_standard_library(
    executor: SlurmExecutor, slurm_cluster: ClusterSettings
) -> None:
    # The standard library cannot cancel a running call; a remote job must be stoppable.
    future = executor.submit(nap, 300)
    assert wait_until(future.running, within=120), future.state
    assert future.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=1)
    assert future.job_id is not None and leaves_the_queue(slurm_cluster, future.job_id)


def test_cancel_a_finished_job_returns_false(executor: SlurmExecutor) -> None:
    future = executor.submit(add, 4)
    assert future.result(timeout=120) == 4
    assert not future.cancel() and not future.cancelled()


def test_cancel_right_after_submit_leaves_no_job(
    executor: SlurmExecutor, slurm_cluster: ClusterSettings
) -> None:
    futures = [executor.submit(nap, 300) for _ in range(5)]
    assert all(f.cancel() for f in futures)
    for future in futures:
        with pytest.raises(concurrent.futures.CancelledError):
            future.result()
    # Cancelled before sbatch answered: never submitted, or scancelled once its id arrived.
    time.sleep(2)
    for future in futures:
        if future.job_id is not None:
            assert leaves_the_queue(slurm_cluster, future.job_id)


# ------------------------------------------------------------------------------------------ shutdown
def test_shutdown_waits_for_the_jobs_and_refuses_new_ones(own_executor: SlurmExecutor) -> None:
    futures = [own_executor.submit(nap, 2, i) for i in range(3)]
    own_executor.shutdown(wait=True)
    assert all(f.done() for f in futures) and [f.result() for f in futures] == [0, 1, 2]
    with pytest.raises(SessionClosedError, match="shutdown"):
        own_executor.submit(add, 1)
    with pytest.raises(RuntimeError):  # the standard library's type, too
        own_executor.map(add, [1])
    own_executor.shutdown()  # again: nothing happens


def test_shutdown_without_waiting_returns_at_once_and_the_jobs_still_finish(
    own_executor: SlurmExecutor,
) -> None:
    future = own_executor.submit(nap, 3, "done later")
    started = time.monotonic()
    own_executor.shutdown(wait=False)
    assert time.monotonic() - started < 2.0
    assert future.result(timeout=120) == "done later"


def test_shutdown_cancel_futures_cancels_pending_and_running_jobs(
    own_executor: SlurmExecutor, slurm_cluster: ClusterSettings
) -> None:
    held = own_executor.with_spec(HELD).submit(add, 1)
    running = own_executor.submit(nap, 300)
    assert wait_until(running.running, within=120)
    held_id = held.wait_accepted()
    own_executor.shutdown(wait=True, cancel_futures=True)
    assert held.cancelled() and running.cancelled()
    assert running.job_id is not None
    assert leaves_the_queue(slurm_cluster, held_id) and leaves_the_queue(slurm_cluster, running.job_id)


def test_an_exception_leaving_the_block_cancels_the_live_jobs(
    slurm_cluster: ClusterSettings,
) -> None:
    with pytest.raises(KeyError), SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as ex:
        future = ex.submit(nap, 300)
        job_id = future.wait_accepted(timeout=60)
        raise KeyError("user error")
    assert future.cancelled()
    assert leaves_the_queue(slurm_cluster, job_id)


def test_leaving_the_block_waits_for_the_jobs(slurm_cluster: ClusterSettings) -> None:
    with SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as ex:
        future = ex.submit(nap, 2, "waited for")
    assert future.done() and future.result() == "waited for"


def fails_on_its_first_run(marker: str) -> str:
    """The first attempt's job fails (state FAILED, as a crash would); a later attempt returns."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "second run"


def test_a_retried_future_lists_every_job_id_it_had(executor: SlurmExecutor) -> None:
    marker = f"/tmp/slurmbatch-exec-retry-{os.getpid()}-{time.monotonic_ns()}"
    retrying = executor.with_spec(JobSpec(retries=1, retry_on=(JobFailed,)))
    future = retrying.submit(fails_on_its_first_run, marker)
    try:
        assert future.result(timeout=60) == "second run"
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
    first, retry = future.attempts
    assert first != retry and retry == future.job_id
