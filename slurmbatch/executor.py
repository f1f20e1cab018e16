"""SlurmExecutor: the `concurrent.futures` face of slurmbatch, for scripts, notebooks and engines."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from ._executor_loop import ExecutorLoop
from ._sync_future import SyncJobFuture
from .spec import JobSpec

__all__ = ["SlurmExecutor"]

T = TypeVar("T")

#: The worker count engines read from an executor (Dask's `scheduler=executor` reads `_max_workers`):
#: how many calls they keep in flight at once. Slurm queues the jobs, so it only bounds the engine.
DEFAULT_MAX_WORKERS = 64


class SlurmExecutor(concurrent.futures.Executor):
    """Run Python functions as Slurm jobs through a `concurrent.futures.Executor`.

    ```python
    with SlurmExecutor("login.cluster.org", user="me", spec=JobSpec(options={"time": "00:10:00"})) as ex:
        future = ex.submit(simulate, 3.0, 4.0)
        print(future.result())
        print(list(ex.map(simulate, range(10), range(10))))
    ```

    It takes every [`SlurmSession`][slurmbatch.SlurmSession] option, and opens one session (it raises
    [`ConnectError`][slurmbatch.ConnectError] and friends here, like the session's `async with`). The session lives on a
    private event loop in a background thread, so the executor works from any thread, including one
    where an event loop is already running (a Jupyter cell, sync code called from an asyncio app,
    `loop.run_in_executor(executor, fn, x)`). Everything of the session is kept: one bounded SSH pool,
    calls that arrive together (from any number of threads) coalesced into job arrays and one round
    trip, the result watcher, exactly-once submission and the journal.

    Leaving the `with` block waits for the jobs, as `shutdown(wait=True)`; leaving it through an
    exception cancels every unfinished job (one `scancel`). An executor that is garbage-collected
    closes its session once its jobs have ended; one still open when the interpreter exits leaves its
    live jobs to Slurm and to the journal, from which `reattach` collects them later, and does not
    hold the exit up.

    Args:
        host: The login node, as for [`SlurmSession`][slurmbatch.SlurmSession].
        spec: The [`JobSpec`][slurmbatch.JobSpec] of every call (default `JobSpec()`); `with_spec` gives
            another default on the same session.
        max_workers: The number of calls engines keep in flight (see `DEFAULT_MAX_WORKERS`).
        **session_options: Every keyword argument of [`SlurmSession`][slurmbatch.SlurmSession] (`user`, `port`,
            `remote_workdir`, `max_connections`, `journal`, ...).
    """

    def __init__(
        self,
        host: str,
        *,
        spec: JobSpec | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        **session_options: Any,
    ) -> None:
        if spec is not None and not isinstance(spec, JobSpec):
            raise TypeError(f"spec must be a JobSpec, not {type(spec).__name__}: build one with JobSpec(...)")
        if spec is not None and session_options.get("default_spec") is not None:
            raise TypeError("pass either spec= or default_spec=, not both: they name the same thing")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive number of calls, not {max_workers!r}")
        self._loop = ExecutorLoop(host, session_options)
        self._spec = spec
        self._max_workers = max_workers
        self._views = _Handles(self._loop)
        self._views.hold(self)

    @classmethod
    def _view(cls, base: SlurmExecutor, spec: JobSpec) -> SlurmExecutor:
        view = cls.__new__(cls)
        view._loop = base._loop
        view._spec = spec
        view._max_workers = base._max_workers
        view._views = base._views
        view._views.hold(view)
        return view

    def __repr__(self) -> str:
        state = "shut down" if self._loop.closed else "open"
        return f"<SlurmExecutor session={self.session_id} {state}>"

    @property
    def session_id(self) -> str:
        """The session's name in the journal: pass it to `reattach` from a later executor."""
        return self._loop.session_id

    def with_spec(self, spec: JobSpec) -> SlurmExecutor:
        """An executor on the same session whose calls use `spec` by default.

        Both share everything (connections, arrays, the journal): shutting either down shuts down the
        session of both.
        """
        if not isinstance(spec, JobSpec):
            raise TypeError(f"spec must be a JobSpec, not {type(spec).__name__}: build one with JobSpec(...)")
        return SlurmExecutor._view(self, spec)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> SyncJobFuture[T]:
        """Submit `fn(*args, **kwargs)` as a Slurm job; return its future at once.

        The future's `job_id` is set once sbatch accepted the job, a moment later
        (`wait_accepted` waits for it). A function or argument that cannot be
        pickled, or a job sbatch refuses, fails the future with [`PayloadError`][slurmbatch.PayloadError] or
        [`SubmissionError`][slurmbatch.SubmissionError]. Raises [`SessionClosedError`][slurmbatch.SessionClosedError] after `shutdown`.

        A future of this executor among the arguments (also inside lists, tuples, dicts and sets) makes
        the job wait for that one on the cluster and take its value there; this call then waits until
        sbatch has accepted that job (its id is what the new job waits for).
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a function to run, not {type(fn).__name__}")
        _wait_for_upstream_jobs((args, kwargs))
        return self._loop.submit(fn, args, kwargs, self._spec)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Run `fn` once per item as job arrays; yield the results in order, like `Executor.map`.

        Every call is submitted before this returns (one `sbatch --array` per MaxArraySize tasks).
        `timeout` counts from this call: a result not there in time raises `TimeoutError`. When the
        iteration stops early (an exception, a `break` and the iterator's end), the jobs not finished
        are cancelled, as the standard library does. `chunksize` is accepted for compatibility and
        unused: arrays already make one scheduler record for many calls.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        futures = self._loop.map(fn, iterables, self._spec)
        return _results_in_order(futures, deadline)

    def reattach(self, session_id: str | None = None) -> list[SyncJobFuture[Any]]:
        """Futures of the jobs an earlier session or executor left uncollected (see `SlurmSession.reattach`).

        `session_id` is that executor's `session_id`; without it, every earlier session on the
        same login node and work directory that left jobs behind.
        """
        return self._loop.reattach(session_id)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs and close the session.

        With `wait`, return once every job has ended and the session is closed; otherwise at once,
        the session closing in the background when the jobs have ended. `cancel_futures=True` cancels
        every unfinished job first, pending or running, with one `scancel`; their futures raise
        `concurrent.futures.CancelledError`. Interrupted while waiting (Ctrl-C), it cancels the
        unfinished jobs, waits for that, and re-raises.
        """
        self._loop.close("cancel" if cancel_futures else "wait", wait=wait)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # An exception leaving the block cancels what is live, as the async block does.
        self.shutdown(wait=True, cancel_futures=exc_type is not None)


def _results_in_order(futures: list[SyncJobFuture[T]], deadline: float | None) -> Iterator[T]:
    futures.reverse()  # popped from the end: a result yielded is no longer held here
    try:
        while futures:
            future = futures[-1]
            value = future.result(None if deadline is None else deadline - time.monotonic())
            futures.pop()
            yield value
    finally:
        for future in futures:
            future.cancel()


class _Handles:
    """The executors of one session (an executor and its `with_spec` views).

    When the last of them is garbage-collected without a shutdown, the session closes in the background
    once its jobs have ended; the loop thread never holds an executor, so that collection can happen.
    """

    def __init__(self, loop: ExecutorLoop) -> None:
        self._loop = loop
        self._count = 0

    def hold(self, executor: SlurmExecutor) -> None:
        self._count += 1
        finalizer = weakref.finalize(executor, self._release)
        finalizer.atexit = False  # at exit the loop leaves the jobs to the journal instead

    def _release(self) -> None:
        self._count -= 1
        if self._count == 0 and not self._loop.closed:
            # Not here: a collection may run in any thread, even one that holds the loop's lock.
            threading.Thread(
                target=self._loop.close, args=("wait",), kwargs={"wait": False}, daemon=True
            ).start()


def _wait_for_upstream_jobs(arguments: object) -> None:
    """Wait until sbatch accepted the jobs of the executor futures in `arguments` (builtin containers)."""
    pending: list[object] = [arguments]
    while pending:
        item = pending.pop()
        if isinstance(item, SyncJobFuture):
            try:
                item.wait_accepted()
            except Exception:
                continue  # it was never submitted: the new job's future says so (PayloadError)
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
