"""SlurmSession: run Python functions as Slurm jobs on a cluster reached over SSH."""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from . import _probe
from ._errors import JobCancelled, SessionClosedError, SubmissionError
from ._poller import Poller
from ._progress import show_progress
from ._remote_layout import RemoteLayout
from ._submitter import ArrayShape, SubmitRequest, Submitter
from .future import JobFuture
from .payload import ArgumentStore, FunctionBlob, pack_function, runner_digest, runner_source
from .rpc_budget import RpcBudget, TokenBucket
from .slurm.commands import scancel_argv
from .slurm.script import render_script
from .slurm.states import JobState
from .spec import JobSpec
from .transport import ConnectSettings, SSHPool

__all__ = ["SlurmSession"]

logger = logging.getLogger("slurmbatch")
T = TypeVar("T")

_LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_LOCAL_CLOUDPICKLE = version("cloudpickle")
_UNSET: Any = object()


def _job_token(token: str) -> str:
    """The token of the job a (possibly array task) token belongs to: ``sb-x.4`` -> ``sb-x``."""
    return token.split(".", 1)[0]


class SlurmSession:
    """A connection to a Slurm login node over SSH, and the jobs submitted through it.

    Use it as an async context manager; it works under asyncio and trio::

        async with SlurmSession("login.cluster.org", user="me") as session:
            future = await session.submit(simulate, (1.0, 2.0), JobSpec(options={"time": "00:10:00"}))
            print(await future)

    Every job of the session shares one bounded pool of SSH connections (at most ``max_connections``,
    each with at most ``max_channels`` open channels), and one status loop that asks the scheduler about
    all of them in one query per interval.

    Leaving the block normally waits until every job submitted through the session has ended (their
    futures stay readable afterwards). Leaving it through an exception or a cancellation cancels every
    job that is still live, with one ``scancel``, shielded from that cancellation. After
    :meth:`detach`, jobs run on past the block instead.

    Args:
        host: The login node: a host name, an address, or a ``Host`` alias from the ssh config.
        user: Login name; default from the ssh config, else the local user.
        port: SSH port; default from the ssh config, else 22.
        key_file: A private key file (or several); default: ssh-agent keys and the usual ``~/.ssh`` keys.
        cert_file: An OpenSSH certificate for the key (sites that sign short-lived user certificates).
        passphrase: Passphrase of an encrypted key file.
        known_hosts: The known_hosts file that host keys are checked against; default the ssh config's
            ``UserKnownHostsFile``, else ``~/.ssh/known_hosts``.
        verify_host_key: ``False`` accepts any host key: an explicit opt-out that exposes the session to
            man-in-the-middle attacks.
        ssh_config: OpenSSH client config files to honour (HostName, Port, User, IdentityFile,
            ProxyJump); default ``~/.ssh/config``. ``()`` reads none.
        remote_workdir: Where jobs keep their files on the cluster (made private to you); relative paths
            are taken from your home directory. It must be visible from the compute nodes.
        python: The Python interpreter jobs run; it needs this client's minor version and cloudpickle.
        check_remote_python: Check ``python`` on the login node when the session opens. Turn it off when
            the interpreter only exists on compute nodes (e.g. after ``JobSpec.setup``).
        max_connections: Most SSH connections the session opens at once.
        max_channels: Most channels open at once per connection; must stay below the server's
            ``MaxSessions`` (OpenSSH's default is 10).
        status_interval: Shortest and longest seconds between scheduler queries (the interval grows
            while nothing changes).
        cleanup: Remove a job's remote files once its result is collected and the session ends.
        rpc_budget: A client-side limit on the RPCs sent to slurmctld (sbatch, squeue/sacct, scancel),
            e.g. ``RpcBudget(burst=30, rate=2.0)``, Slurm's own rate limiter's defaults. Default: none.
        default_spec: The :class:`JobSpec` used when ``submit``/``map`` get none.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        key_file: str | Path | Sequence[str | Path] | None = None,
        cert_file: str | Path | None = None,
        passphrase: str | None = None,
        known_hosts: str | Path | None = None,
        verify_host_key: bool = True,
        ssh_config: str | Path | Sequence[str | Path] = _UNSET,
        remote_workdir: str = "~/slurmbatch",
        python: str = "python3",
        check_remote_python: bool = True,
        max_connections: int = 2,
        max_channels: int = 8,
        status_interval: tuple[float, float] = (2.0, 30.0),
        cleanup: bool = True,
        rpc_budget: RpcBudget | None = None,
        default_spec: JobSpec | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        options: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "passphrase": passphrase,
            "verify_host_key": verify_host_key,
            "connect_timeout": connect_timeout,
        }
        if key_file is not None:
            options["key_files"] = [key_file] if isinstance(key_file, (str, Path)) else list(key_file)
        if cert_file is not None:
            options["cert_files"] = [str(cert_file)]
        if known_hosts is not None:
            options["known_hosts"] = str(known_hosts)
        if ssh_config is not _UNSET:
            options["ssh_config"] = [ssh_config] if isinstance(ssh_config, (str, Path)) else list(ssh_config)
        self.settings = ConnectSettings(**options)
        _probe.python_command(python)  # fail now on an empty interpreter name
        if default_spec is not None and not isinstance(default_spec, JobSpec):
            raise TypeError(f"default_spec must be a JobSpec, not {type(default_spec).__name__}")
        self._python = python
        self._check_remote_python = check_remote_python
        self._workdir = remote_workdir
        self._max_connections = max_connections
        self._max_channels = max_channels
        self._status_interval = status_interval
        self._cleanup = cleanup
        self._default_spec = default_spec or JobSpec()
        if rpc_budget is not None and not isinstance(rpc_budget, RpcBudget):
            raise TypeError(f"rpc_budget must be an RpcBudget, not {type(rpc_budget).__name__}")
        self._rpc_budget = rpc_budget
        self._budget: TokenBucket | None = None
        self._state = "new"
        self._detached = False
        self._stack = contextlib.AsyncExitStack()
        self._collected: list[str] = []  # job tokens whose remote files may be removed at exit
        # Nothing remembered by identity: an object changed in place between two submits must not travel
        # stale. Large arguments are still uploaded once per content (their hash).
        self._arguments = ArgumentStore(remembered=0)
        self._pool: SSHPool
        self._layout: RemoteLayout
        self._poller: Poller
        self._submitter: Submitter
        self._tg: anyio.abc.TaskGroup
        self.max_array_size = 1001

    # ------------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> SlurmSession:
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
        return self

    async def _open(self) -> None:
        self._pool = await self._stack.enter_async_context(
            SSHPool(self.settings, max_connections=self._max_connections, max_channels=self._max_channels)
        )
        runner_name = f"runner-{runner_digest()[:12]}.py"
        command = _probe.probe_command(
            self._workdir, python=self._python if self._check_remote_python else None, runner_name=runner_name
        )
        result = await self._pool.run(command)
        facts = _probe.parse_probe(result.exit_status, result.stdout, result.stderr, workdir=self._workdir)
        _probe.python_check(
            facts.python_report,
            python=self._python,
            local_python=_LOCAL_PYTHON,
            local_cloudpickle=_LOCAL_CLOUDPICKLE,
        )
        self._layout = RemoteLayout(facts.workdir)
        self.max_array_size = facts.max_array_size
        if not facts.runner_present:
            async with self._pool.sftp() as sftp:
                staged = self._layout.runner(runner_digest()) + ".part"
                await sftp.put(staged, runner_source())
                await sftp.rename(staged, self._layout.runner(runner_digest()))
        if self._rpc_budget is not None:
            self._budget = TokenBucket(self._rpc_budget)
        self._poller = Poller(
            self._pool,
            self._layout,
            accounting=facts.accounting,
            status_interval=self._status_interval,
            budget=self._budget,
        )
        self._submitter = Submitter(
            self._pool,
            self._layout,
            render=self._render,
            on_submitted=self._on_submitted,
            max_array_size=self.max_array_size,
            budget=self._budget,
        )
        # The task group is not on the exit stack: it must be exited outside the shielded scope that
        # closes the rest (cancel scopes exit in the order they were entered).
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self._watch_jobs)
        await self._tg.start(self._submitter.run)
        logger.info("session open on %s, work directory %s", self.settings.host, facts.workdir)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = "closing"
        try:
            if exc_type is None and not self._detached:
                await self._poller.wait_idle()
        except BaseException:
            # Cancelled (or interrupted) while waiting for the jobs: they must not outlive the block.
            await self._cancel_live("the session was cancelled while waiting for its jobs")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if exc_type is not None and not self._detached:
                    await self._cancel_live(f"the session block raised {exc_type.__name__}")
                if self._cleanup:
                    await self._remove_collected()
            self._state = "closed"
            self._tg.cancel_scope.cancel()
            try:
                await self._tg.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._stack.aclose()

    async def _watch_jobs(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the status loop; when it fails, fail the jobs it was watching with that error, and go on.

        The user's code runs inside this task group: an error here must reach the futures, never cancel
        the user's block.
        """
        started = False
        while True:
            try:
                if started:
                    await self._poller.run()
                else:
                    started = True
                    await self._poller.run(task_status=task_status)
            except Exception as exc:
                logger.error(
                    "the status loop failed (%s); failing the %d job(s) it watched",
                    exc,
                    len(self._poller.live()),
                )
                self._poller.fail_all(exc)
                await anyio.sleep(1.0)

    def detach(self) -> list[str]:
        """Let the jobs run on after the ``async with`` block; return the ids of those still live.

        Their results stay in the remote work directory.
        """
        self._require_open()
        self._detached = True
        return [future.job_id for future in self._poller.live()]

    # ------------------------------------------------------------------------------- submission
    async def submit(
        self,
        fn: Callable[..., T],
        args: Sequence[Any] = (),
        spec: JobSpec | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> JobFuture[T]:
        """Submit ``fn(*args, **kwargs)`` as a Slurm job; return its future once sbatch accepted it.

        Raises :class:`PayloadError` if the function or an argument cannot be pickled, and
        :class:`SubmissionError` with sbatch's own message if sbatch refuses the job; nothing is
        submitted in either case. Concurrent calls are sent to the login node together.
        """
        self._require_open()
        spec = self._spec(spec)
        request = SubmitRequest(pack_function(fn), self._arguments.pack(tuple(args), kwargs or {}), spec)
        await self._submitter.submit(request)
        assert request.future is not None
        return request.future

    async def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        spec: JobSpec | None = None,
        progress: bool = False,
    ) -> list[JobFuture[T]]:
        """Submit ``fn`` once per item, like the builtin ``map``; return the futures in order.

        The calls become job arrays (one ``sbatch --array`` per MaxArraySize tasks, throttled by
        ``spec.array_parallelism``), with one packed argument file per array; each future resolves on its
        own. All iterables must have the same length (a :class:`ValueError` says so otherwise).
        ``progress=True`` shows a progress bar (needs ``rich``) until every call has finished.
        """
        self._require_open()
        columns = [list(items) for items in iterables]
        if not columns:
            raise TypeError("map() needs at least one iterable of arguments")
        lengths = {len(column) for column in columns}
        if len(lengths) > 1:
            raise ValueError(
                "map() got iterables of different lengths "
                f"({', '.join(str(len(c)) for c in columns)}); pass iterables of equal length"
            )
        spec = self._spec(spec)
        blob = pack_function(fn)
        requests = [
            SubmitRequest(blob, self._arguments.pack(tuple(call), {}), spec)
            for call in zip(*columns, strict=True)
        ]
        # One unit for the submitter: the calls become job arrays, split at the cluster's MaxArraySize.
        await self._submitter.submit_all(requests)
        refused = [r.error for r in requests if r.error is not None]
        if refused:
            raise refused[0]
        futures: list[JobFuture[T]] = [r.future for r in requests if r.future is not None]
        if progress:
            self._tg.start_soon(
                show_progress, futures, self._poller.progress_event, getattr(fn, "__name__", "map")
            )
        return futures

    async def as_completed(self, futures: Iterable[JobFuture[T]]) -> AsyncIterator[JobFuture[T]]:
        """Yield ``futures`` as their jobs finish (whatever the outcome), first finished first."""
        pending = list(futures)
        while pending:
            progress = self._poller.progress_event()
            still = []
            for future in pending:
                if future.done():
                    yield future
                else:
                    still.append(future)
            pending = still
            if pending:
                await progress.wait()

    def _spec(self, spec: JobSpec | None) -> JobSpec:
        if spec is None:
            return self._default_spec
        if not isinstance(spec, JobSpec):
            raise TypeError(f"spec must be a JobSpec, not {type(spec).__name__}: build one with JobSpec(...)")
        return spec

    def _render(self, spec: JobSpec, blob: FunctionBlob, token: str, array: ArrayShape | None) -> str:
        """The batch script of job ``token``: one call, or an array whose task ``i`` is call ``i``."""
        layout = self._layout
        python = _probe.python_command(spec.python or self._python)
        runner = layout.runner(runner_digest())
        # Array tasks share the job's files; the runner puts $SLURM_ARRAY_TASK_ID in place of {task}.
        task = token if array is None else f"{token}.{{task}}"
        result = layout.result(task)
        run_argv = [
            *python,
            runner,
            "run",
            layout.function(blob.digest),
            layout.arguments(token),
            result,
            "--expect-python",
            _LOCAL_PYTHON,
            "--expect-cloudpickle",
            _LOCAL_CLOUDPICKLE.split(".")[0],
        ]
        if array is not None:
            run_argv.append("--packed")
        epilogue: list[list[str]] = []
        if spec.use_srun:
            run_argv += ["--rank-dir", layout.rank_dir(task)]
            epilogue.append([*python, runner, "gather", result, "--rank-dir", layout.rank_dir(task)])
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", blob.name.rsplit(".", 1)[-1])[:40]
        output = token if array is None else f"{token}.%a"  # Slurm's own placeholder for the task id
        directives: dict[str, str] = {
            "job-name": spec.job_name or f"{name}-{token}",
            "comment": token,
            "output": layout.stdout(output),
            "error": layout.stderr(output),
        }
        if array is not None:
            throttle = f"%{spec.array_parallelism}" if spec.array_parallelism else ""
            directives["array"] = f"0-{array.size - 1}{throttle}"
        return render_script(spec, run_argv=run_argv, directives=directives, epilogue=epilogue)

    def _on_submitted(self, request: SubmitRequest) -> None:
        assert request.job_id is not None
        future: JobFuture[Any] = JobFuture(
            self, job_id=request.job_id, token=request.token, source_file=request.function.source_file
        )
        request.future = future
        self._poller.track(future)
        self._collected.append(request.token)

    # ------------------------------------------------------------------------------- jobs
    async def _cancel_jobs(self, futures: Sequence[JobFuture[Any]]) -> None:
        live = [f for f in futures if not f.done()]
        if not live:
            return
        # The ids travel on stdin: a big map's tasks would not fit on one command line, and xargs splits
        # them over as few scancel calls as the login node's argument limit allows.
        ids = scancel_argv([f.job_id for f in live])[1:]
        step = self._budget.burst if self._budget is not None else len(ids)
        with anyio.CancelScope(shield=True):
            for start in range(0, len(ids), step):
                if self._budget is not None:
                    await self._budget.acquire(len(ids[start : start + step]))
                result = await self._pool.run("xargs scancel", input=" ".join(ids[start : start + step]))
                if not result.ok:
                    raise SubmissionError(f"scancel failed: {result.stderr.strip() or result.stdout.strip()}")
        logger.info("cancelled %d job(s)", len(live))
        self._poller.request_status()

    async def _cancel_live(self, why: str) -> None:
        live = self._poller.live()
        if not live:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            try:
                await self._cancel_jobs(live)
            except Exception as exc:  # the jobs are reported as cancelled below either way
                logger.warning("could not cancel %d job(s): %s", len(live), exc)
        for future in live:
            self._poller.resolve(
                future,
                exc=JobCancelled(
                    f"Job {future.job_id} was cancelled: {why}.", job_id=future.job_id, state="CANCELLED"
                ),
                state=JobState.CANCELLED,
            )

    async def _read_output(self, future: JobFuture[Any], stream: str) -> str:
        self._require_open(allow_closing=True)
        path = self._layout.stdout(future.token) if stream == "stdout" else self._layout.stderr(future.token)
        async with self._pool.sftp() as sftp:
            found = await sftp.get_many([path])
        data = found.get(path)
        return "" if data is None else data.decode(errors="replace")

    async def _remove_collected(self) -> None:
        live = {f.token for f in self._poller.live()}
        done = [t for t in self._collected if t not in live]
        if not done:
            return
        # A job's own files, and the files an array's tasks share once none of its tasks is live.
        names = [f"{token}{suffix}" for token in done for suffix in (".out", ".err", ".ranks")]
        live_jobs = {_job_token(t) for t in live}
        names += [
            f"{job}{suffix}"
            for job in {_job_token(t) for t in done} - live_jobs
            for suffix in (".args.pkl", ".sh")
        ]
        with anyio.move_on_after(60):
            try:
                await self._pool.run(
                    f"cd {shlex.quote(self._layout.jobs_dir)} && xargs -0 rm -rf --", input="\0".join(names)
                )
            except Exception as exc:
                logger.warning("could not remove the remote files of %d job(s): %s", len(done), exc)

    def _require_open(self, *, allow_closing: bool = False) -> None:
        if self._state == "open" or (allow_closing and self._state == "closing"):
            return
        if self._state == "new":
            raise SessionClosedError(
                "The session is not open yet: use it inside `async with SlurmSession(...)`."
            )
        raise SessionClosedError("The session is closed: submit and read jobs inside its `async with` block.")
