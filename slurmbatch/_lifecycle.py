"""Opening and closing a SlurmSession: the parts it is made of, the order they start and stop in."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskStatus

from . import _probe
from ._batched_reads import BatchedReader
from ._cleanup import JobCleanup
from ._dependencies import Dependencies
from ._errors import ConnectError, SessionClosedError
from ._job_script import LOCAL_CLOUDPICKLE, LOCAL_PYTHON
from ._journal import Journal
from ._poller import Poller
from ._remote_layout import RemoteLayout
from ._retries import Retries
from ._status_loop import follow_jobs
from ._submitter import ArrayShape, SubmitRequest, Submitter
from .future import JobFuture
from .payload import FunctionBlob, runner_digest, runner_source
from .rpc_budget import RpcBudget, TokenBucket
from .slurm.release import ClusterInfo
from .transport import ConnectSettings, Transport
from .transport.select import TransportName, open_transport

__all__ = ["SessionLifecycle"]

logger = logging.getLogger("slurmbatch")


class SessionLifecycle:
    """The part of [`SlurmSession`][slurmbatch.SlurmSession] that opens and closes it (see its docstring)."""

    settings: ConnectSettings
    id: str
    max_array_size: int
    cluster_info: ClusterInfo
    _python: str
    _check_remote_python: bool
    _workdir: str
    _max_connections: int
    _max_channels: int
    _status_interval: tuple[float, float]
    _reconnect_deadline: float
    _cancel_timeout: float
    _journal_path: str | Path | None
    _journal: Journal | None
    _cleanup: bool
    _rpc_budget: RpcBudget | None
    _slurm_setup: str
    _budget: TokenBucket | None
    _state: str
    _detached: bool
    _stack: contextlib.AsyncExitStack
    _pool: Transport
    _transport: TransportName
    _control_path: str | None
    _layout: RemoteLayout
    _poller: Poller
    _submitter: Submitter
    _jobs: JobCleanup
    _retries: Retries
    _tg: anyio.abc.TaskGroup
    _reader: BatchedReader
    _deps: Dependencies

    # Provided by the session: how jobs are rendered and tracked, and how files are read.
    def _render(
        self,
        spec: Any,
        blob: FunctionBlob,
        token: str,
        array: ArrayShape | None,
        dependency: str | None = None,
    ) -> str:
        raise NotImplementedError

    def _on_submitted(self, request: SubmitRequest) -> None:
        raise NotImplementedError

    async def cancel_jobs(self, futures: Any) -> None:
        raise NotImplementedError

    async def _read_files(self, paths: list[str]) -> dict[str, bytes | None]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- lifecycle
    async def _enter(self) -> None:
        if self._state != "new":
            raise SessionClosedError("A SlurmSession can be entered only once; create a new one.")
        self._state = "opening"
        try:
            await self._open()
        except BaseException:
            self._state = "closed"
            with anyio.CancelScope(shield=True):
                await self._stack.aclose()
            raise
        self._state = "open"

    async def _open(self) -> None:
        if self._journal_path is not None:
            # First: a journal that cannot be written is the caller's setting, found before any network.
            journal = self._journal = await Journal.open(self._journal_path, session=self.id)
            self._stack.push_async_callback(journal.close)
        transport = await open_transport(
            self.settings,
            transport=self._transport,
            control_path=self._control_path,
            max_connections=self._max_connections,
            max_channels=self._max_channels,
            reconnect_deadline=self._reconnect_deadline,
        )
        self._stack.push_async_callback(transport.aclose)
        self._pool = transport
        runner_name = f"runner-{runner_digest()[:12]}.py"
        command = _probe.probe_command(
            self._workdir,
            python=self._python if self._check_remote_python else None,
            runner_name=runner_name,
            slurm_setup=self._slurm_setup,
        )
        result = await self._pool.script(command, what="the session's first command (its probe)")
        facts = _probe.parse_probe(result.exit_status, result.stdout, result.stderr, workdir=self._workdir)
        _probe.python_check(
            facts.python_report,
            python=self._python,
            local_python=LOCAL_PYTHON,
            local_cloudpickle=LOCAL_CLOUDPICKLE,
        )
        self._layout = RemoteLayout(facts.workdir)
        self.max_array_size = facts.max_array_size
        #: What the session learnt about the cluster when it opened: Slurm version, accounting, limits.
        self.cluster_info = facts.cluster_info
        self.cluster_info.warn_if_untested(self.settings.host)
        if self._journal is not None:
            await self._journal.register(self.settings.host, facts.workdir)
        if not facts.runner_present:
            await self._upload_runner()
        if self._rpc_budget is not None:
            self._budget = TokenBucket(self._rpc_budget)
        self._poller = Poller(
            self._pool,
            self._layout,
            accounting=facts.accounting,
            status_interval=self._status_interval,
            budget=self._budget,
            slurm_setup=self._slurm_setup,
            restore_workdir=self._restore_workdir,
            journal=self._journal,
            cancel=self.cancel_jobs,
            dependencies=self._deps,
        )
        self._submitter = Submitter(
            self._pool,
            self._layout,
            render=self._render,
            on_submitted=self._on_submitted,
            max_array_size=self.max_array_size,
            budget=self._budget,
            slurm_setup=self._slurm_setup,
            reconnect_deadline=self._reconnect_deadline,
            journal=self._journal,
        )
        self._jobs = JobCleanup(
            self._pool,
            self._layout,
            self._poller,
            self._submitter,
            session_id=self.id,
            budget=self._budget,
            slurm_setup=self._slurm_setup,
            reconnect_deadline=self._reconnect_deadline,
            cancel_timeout=self._cancel_timeout,
            remove_files=self._cleanup,
            held=self._deps.held,
        )
        # The task group is not on the exit stack: it must be exited outside the shielded scope that
        # closes the rest (cancel scopes exit in the order they were entered).
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._retries = Retries(
            submit=self._submitter.submit,
            give_up=self._poller.give_up_retry,
            cancel=self._jobs.cancel,
            task_group=self._tg,
        )
        self._poller.retry = self._retries.take
        await self._tg.start(self._follow_jobs)
        await self._tg.start(self._submitter.run)
        self._reader = BatchedReader(self._read_files, self._tg)
        if self._cleanup:
            self._tg.start_soon(self._jobs.remove_released)
        logger.info("session open on %s, work directory %s", self.settings.host, facts.workdir)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = "closing"
        try:
            if exc_type is None and not self._detached:
                # Submissions first: a job whose sbatch is still under way is not tracked yet.
                await self._submitter.wait_idle()
                await self._poller.wait_idle()
        except BaseException:
            # Cancelled (or interrupted) while waiting for the jobs: they must not outlive the block.
            await self._jobs.cancel_at_exit("the session was cancelled while waiting for its jobs")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if exc_type is not None and not self._detached:
                    await self._jobs.cancel_at_exit(f"the session block raised {exc_type.__name__}")
                if self._detached:
                    self._jobs.abandon_live(self._jobs.detached_error)
                if self._cleanup:
                    if exc_type is None and not self._detached:
                        self._deps.all_jobs_ended()
                    await self._jobs.remove_collected()
            self._state = "closed"
            self._tg.cancel_scope.cancel()
            try:
                await self._tg.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._stack.aclose()

    async def _upload_runner(self) -> None:
        async with self._pool.sftp() as sftp:
            staged = self._layout.runner(runner_digest()) + ".part"
            await sftp.put(staged, runner_source())
            await sftp.rename(staged, self._layout.runner(runner_digest()))

    async def _restore_workdir(self) -> None:
        """Recreate the remote work directory after someone removed it, with the runner in it."""
        result = await self._pool.script(
            "\n".join(_probe.workdir_lines(self._layout.workdir)), what="recreating the work directory"
        )
        if not result.ok:
            logger.error("could not recreate the remote work directory: %s", result.stderr.strip())
            return
        self._submitter.forget_uploads()
        await self._upload_runner()

    async def _follow_jobs(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await follow_jobs(
            self._poller,
            reconnect_deadline=self._reconnect_deadline,
            give_up=self._outage,
            task_status=task_status,
        )

    def _outage(self, error: ConnectError) -> None:
        """The login node stayed unreachable past the deadline: the jobs' outcome is unknown, not failed."""

        def lost(future: JobFuture[Any]) -> ConnectError:
            return ConnectError(
                f"Lost track of job {future.job_id}: {error} The job may still be running; its files stay on "
                f"the cluster and the journal keeps it. Collect it once the login node is reachable again, "
                f"from a new session: `await session.reattach({self.id!r})`.",
                host=error.host or self.settings.host,
                cause=error,
            )

        self._jobs.abandon_live(lost)
