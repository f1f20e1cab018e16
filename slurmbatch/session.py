"""SlurmSession: run Python functions as Slurm jobs on a cluster reached over SSH."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import posixpath
import re
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from . import _probe
from ._batched_reads import BatchedReader
from ._errors import ConnectionLost, JobCancelled, PayloadError, SessionClosedError, SubmissionError
from ._journal import Journal, default_journal_path
from ._poller import Poller
from ._progress import show_progress
from ._reconnect import Outage, retry_lost, sole_error
from ._remote_layout import RemoteLayout, new_token
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
        cleanup: Remove the remote files of finished jobs when the session ends, and those passed to
            :meth:`release` soon after.
        slurm_setup: Shell lines run on the login node before its Slurm commands (sbatch, squeue, sacct,
            scancel), for sites where they need e.g. ``module load slurm``. Jobs do not run them: use
            ``JobSpec.setup`` for that.
        rpc_budget: A client-side limit on the RPCs sent to slurmctld (sbatch, squeue/sacct, scancel),
            e.g. ``RpcBudget(burst=30, rate=2.0)``, Slurm's own rate limiter's defaults. Default: none.
        default_spec: The :class:`JobSpec` used when ``submit``/``map`` get none.
        connect_timeout: Seconds one SSH connection attempt may take.
        max_argument_bytes: The largest pickled argument (or function) a call may send; a larger one is
            refused with a :class:`PayloadError` before anything is uploaded. ``None``: no limit.
        journal: The local journal file that records each job before and after it is submitted, so that
            another process can :meth:`reattach` to jobs this one did not collect. ``True`` (default):
            ``~/.cache/slurmbatch/journal.sqlite3``; ``False``: no journal.
        reconnect_deadline: Seconds an outage may last: while the connection keeps dropping, it is
            opened again (with jittered backoff) and what was under way is resumed or, when safe, done
            again; a job already submitted is never submitted twice. Past it, the futures of the
            session's jobs fail with a :class:`ConnectError` that says why.
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
        slurm_setup: Sequence[str] = (),
        rpc_budget: RpcBudget | None = None,
        default_spec: JobSpec | None = None,
        connect_timeout: float = 30.0,
        reconnect_deadline: float = 120.0,
        journal: str | Path | bool = True,
        max_argument_bytes: int | None = 1 << 30,
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
        # Checked now, not when the block opens: the mistake is on this line of the caller's code.
        SSHPool.check_limits(
            max_connections=max_connections, max_channels=max_channels, reconnect_deadline=reconnect_deadline
        )
        self._status_interval = _checked_interval(status_interval)
        self._reconnect_deadline = float(reconnect_deadline)
        if not isinstance(journal, (str, Path, bool)):
            raise TypeError(f"journal must be a file path, True or False, not {type(journal).__name__}")
        self._journal_path = default_journal_path() if journal is True else (journal or None)
        if max_argument_bytes is not None and (
            isinstance(max_argument_bytes, bool)
            or not isinstance(max_argument_bytes, int)
            or max_argument_bytes < 1
        ):
            raise ValueError(
                f"max_argument_bytes must be a positive number of bytes or None, not {max_argument_bytes!r}"
            )
        self._max_argument_bytes = max_argument_bytes
        self._journal: Journal | None = None
        #: This session's name in the journal: pass it to :meth:`reattach` from another process.
        self.id = new_token().replace("sb-", "session-", 1)
        self._cleanup = cleanup
        self._default_spec = default_spec or JobSpec()
        if rpc_budget is not None and not isinstance(rpc_budget, RpcBudget):
            raise TypeError(f"rpc_budget must be an RpcBudget, not {type(rpc_budget).__name__}")
        self._rpc_budget = rpc_budget
        if isinstance(slurm_setup, str) or not all(isinstance(line, str) for line in slurm_setup):
            raise TypeError(
                f"slurm_setup must be a list of shell lines, not {slurm_setup!r}: e.g. ['module load slurm']"
            )
        # In the current shell (exports must last) with its output dropped: it would garble the replies.
        self._slurm_setup = (
            "{\n" + "".join(f"{line}\n" for line in slurm_setup) + "} >/dev/null\n" if slurm_setup else ""
        )
        self._budget: TokenBucket | None = None
        self._state = "new"
        self._detached = False
        self._stack = contextlib.AsyncExitStack()
        self._collected: dict[str, None] = {}  # job tokens whose remote files may be removed at exit
        self._releasing: set[str] = set()  # tokens whose files release() asked to remove soon
        self._release_wakeup = anyio.Event()
        # Nothing remembered by identity: an object changed in place between two submits must not travel
        # stale. Large arguments are still uploaded once per content (their hash).
        self._arguments = ArgumentStore(remembered=0, max_bytes=max_argument_bytes)
        self._pool: SSHPool
        self._layout: RemoteLayout
        self._poller: Poller
        self._submitter: Submitter
        self._tg: anyio.abc.TaskGroup
        self._reader: BatchedReader
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
            SSHPool(
                self.settings,
                max_connections=self._max_connections,
                max_channels=self._max_channels,
                reconnect_deadline=self._reconnect_deadline,
            )
        )
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
            local_python=_LOCAL_PYTHON,
            local_cloudpickle=_LOCAL_CLOUDPICKLE,
        )
        self._layout = RemoteLayout(facts.workdir)
        self.max_array_size = facts.max_array_size
        if self._journal_path is not None:
            self._journal = Journal(
                self._journal_path, session=self.id, host=self.settings.host, workdir=facts.workdir
            )
            self._stack.callback(self._journal.close)
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
            cancel=self._cancel_jobs,
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
        # The task group is not on the exit stack: it must be exited outside the shielded scope that
        # closes the rest (cancel scopes exit in the order they were entered).
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self._watch_jobs)
        await self._tg.start(self._submitter.run)
        self._reader = BatchedReader(self._read_files, self._tg)
        if self._cleanup:
            self._tg.start_soon(self._remove_released)
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

    async def _watch_jobs(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the status loop; when it fails, fail the jobs it was watching with that error, and go on.

        The user's code runs inside this task group: an error here must reach the futures, never cancel
        the user's block.
        """
        started = False
        outage = Outage(self._reconnect_deadline)
        while True:
            try:
                if started:
                    await self._poller.run()
                else:
                    started = True
                    await self._poller.run(task_status=task_status)
            except Exception as raised:
                # The loop runs a task group: its error arrives wrapped in an exception group.
                exc = sole_error(raised)
                if isinstance(exc, ConnectionLost):
                    # Go on where it stopped, on a new connection; a scheduler query covers the gap.
                    if outage.since is not None and self._poller.last_success > outage.since:
                        outage.over()
                    try:
                        pause = outage.lost(exc, "following the jobs")
                    except Exception as past_deadline:
                        self._poller.fail_all(past_deadline)
                        outage.over()
                        continue
                    self._poller.request_status()
                    await anyio.sleep(pause)
                    continue
                logger.error(
                    "the status loop failed (%s); failing the %d job(s) it watched",
                    exc,
                    len(self._poller.live()),
                )
                self._poller.fail_all(exc)
                await anyio.sleep(1.0)

    def detach(self) -> list[str]:
        """Let the jobs run on after the ``async with`` block; return the ids of those still live.

        Their results stay in the remote work directory, and the journal keeps them: a later session
        (in this process or another) collects them with ``await session.reattach(<this session's id>)``.
        """
        self._require_open()
        self._detached = True
        return [future.job_id for future in self._poller.live()]

    async def reattach(self, session_id: str | None = None) -> list[JobFuture[Any]]:
        """Take over the jobs an earlier session left uncollected; return a future for each.

        ``session_id`` is that session's :attr:`id`; without it, every earlier session on the same login
        node and work directory that left jobs behind (it detached, crashed, or its process was killed).
        The jobs are then followed and collected like this session's own. A job whose submission was cut
        short is looked up, never submitted again: if it never reached sbatch, its future fails with
        :class:`SubmissionError`. Do not reattach to a session that is still running elsewhere.

        Raises :class:`ValueError` if the session used another work directory, or the journal is off.
        """
        self._require_open()
        journal = self._journal
        if journal is None:
            raise ValueError("reattach() reads the journal, and this session was opened with journal=False.")
        if session_id is None:
            sessions = journal.sessions_with_uncollected_jobs(self.settings.host, self._layout.workdir)
        else:
            workdir = journal.workdir_of(session_id)
            if workdir is None:
                raise ValueError(f"The journal {journal.path} knows no session {session_id!r}.")
            if workdir != self._layout.workdir:
                raise ValueError(
                    f"Session {session_id} kept its files in {workdir}, this one in {self._layout.workdir}: "
                    f"open this session with remote_workdir={workdir!r} to reattach."
                )
            sessions = [session_id]
        entries = journal.uncollected(sessions)
        job_ids = await self._job_ids_of(entries)
        futures: list[JobFuture[Any]] = []
        for entry in entries:
            job_id = job_ids.get(entry.token)
            future: JobFuture[Any] = JobFuture(
                self, job_id=job_id or "(never submitted)", token=entry.token, source_file=entry.source_file
            )
            futures.append(future)
            self._collected[entry.token] = None
            if job_id is None:
                self._poller.resolve(
                    future,
                    exc=SubmissionError(
                        "This job was never submitted: the process that was submitting it stopped before "
                        "sbatch ran. Submit it again."
                    ),
                    state=JobState.UNKNOWN,
                )
            else:
                self._poller.track(future)
        journal.adopt(e.token for e in entries)
        if futures:
            logger.info("reattached %d job(s) of %d earlier session(s)", len(futures), len(sessions))
        return futures

    async def _job_ids_of(self, entries: Sequence[Any]) -> dict[str, str]:
        """Job ids by token; for jobs whose batch may not have run, the batch's fence tells."""
        ids = {e.token: e.job_id for e in entries if e.job_id is not None}
        for fence in dict.fromkeys(e.fence for e in entries if e.job_id is None):
            replies, _ = await self._submitter.recover(fence)
            for entry in (e for e in entries if e.fence == fence):
                job_token, _, index = entry.token.partition(".")
                reply = (replies or {}).get(job_token)
                if reply is not None and reply.job_id is not None:
                    ids[entry.token] = f"{reply.job_id}_{index}" if index else reply.job_id
        return ids

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
        if isinstance(args, (str, bytes, bytearray)) or not isinstance(args, Iterable):
            raise TypeError(
                f"args must be a tuple or list of positional arguments, not {type(args).__name__}: write "
                "submit(fn, (x,)) for one argument"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping of keyword arguments, not {type(kwargs).__name__}")
        spec = self._spec(spec)
        request = SubmitRequest(
            self._pack_function(fn), self._arguments.pack(tuple(args), kwargs or {}), spec
        )
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
        blob = self._pack_function(fn)
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

    def _pack_function(self, fn: Callable[..., Any]) -> FunctionBlob:
        blob = pack_function(fn)
        limit = self._max_argument_bytes
        if limit is not None and len(blob.data) > limit:
            raise PayloadError(
                f"Cannot send {blob.name}: it pickles to {len(blob.data) / 2**20:.1f} MiB with what it captures, "
                f"over max_argument_bytes={limit}. Pass large data as an argument kept on the cluster (its path), "
                "not captured in the function, or open the session with a larger max_argument_bytes."
            )
        return blob

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
        self._collected[request.token] = None

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
                result = await retry_lost(
                    functools.partial(
                        self._pool.script,
                        f"{self._slurm_setup}xargs scancel",
                        data="\n".join(ids[start : start + step]),
                        what="scancel",
                    ),
                    deadline=self._reconnect_deadline,
                    what="cancelling jobs",
                )
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
        data = await self._reader.read(path)
        return "" if data is None else data.decode(errors="replace")

    async def _read_files(self, paths: list[str]) -> dict[str, bytes | None]:
        async def read() -> dict[str, bytes | None]:
            async with self._pool.sftp() as sftp:
                return await sftp.get_many(paths)

        return await retry_lost(read, deadline=self._reconnect_deadline, what="reading the output of jobs")

    def release(self, futures: Iterable[JobFuture[Any]]) -> None:
        """Let the remote files of these finished jobs go now, instead of when the session ends.

        With ``cleanup=True`` they are removed shortly after, in the background, together with those of
        other released jobs (one command for many); their ``stdout()`` and ``stderr()`` can no longer be
        read. Long-lived sessions call it once they are done with a job, so that the remote work
        directory does not grow. Raises :class:`ValueError` for a job that has not finished.
        """
        self._require_open(allow_closing=True)
        futures = list(futures)
        unfinished = [f.job_id for f in futures if not f.done()]
        if unfinished:
            raise ValueError(
                f"release() takes finished jobs only; still running: {', '.join(unfinished[:5])}. "
                "Await them (or cancel them) first."
            )
        if self._cleanup:
            self._releasing.update(f.token for f in futures if f.token in self._collected)
            self._release_wakeup.set()

    async def _remove_released(self) -> None:
        """Remove released jobs' files in batches: wait a moment after the first, so more come along."""
        while True:
            await self._release_wakeup.wait()
            await anyio.sleep(1.0)
            self._release_wakeup = anyio.Event()
            tokens, self._releasing = self._releasing, set()
            with anyio.CancelScope(shield=True):  # they are no longer listed for the session's end
                await self._remove_files(tokens)

    async def _remove_collected(self) -> None:
        live = {f.token for f in self._poller.live()}
        await self._remove_files([t for t in self._collected if t not in live])

    async def _remove_files(self, done: Collection[str]) -> None:
        """Remove the remote files of the finished jobs ``done`` (tokens)."""
        if not done:
            return
        live = {f.token for f in self._poller.live()}
        for token in done:
            self._collected.pop(token, None)
        # A job's own files, and the files an array's tasks share once none of its tasks is live.
        names = [f"{token}{suffix}" for token in done for suffix in (".out", ".err", ".ranks")]
        live_jobs = {_job_token(t) for t in live}
        names += [
            f"{job}{suffix}"
            for job in {_job_token(t) for t in done} - live_jobs
            for suffix in (".args.pkl", ".sh")
        ]
        # And the fences of answered submission batches, which no recovery will ask about any more.
        fences, self._submitter.finished_fences = self._submitter.finished_fences, []
        names += [posixpath.basename(fence) for fence in fences]
        with anyio.move_on_after(60):
            try:
                # One name per line: the names are the session's own tokens, without newlines.
                await self._pool.script(
                    f"cd {shlex.quote(self._layout.jobs_dir)} && xargs rm -rf --",
                    data="\n".join(names),
                    what="removing finished jobs' files",
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


def _checked_interval(interval: Any) -> tuple[float, float]:
    """``status_interval`` as two floats, or a :class:`ValueError` that says what it must be."""
    numbers = (
        isinstance(interval, (tuple, list))
        and len(interval) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval)
    )
    if not numbers or not (0 < interval[0] <= interval[1] < math.inf):
        raise ValueError(
            "status_interval must be two positive numbers of seconds, shortest first, e.g. (2.0, 30.0); "
            f"got {interval!r}"
        )
    return float(interval[0]), float(interval[1])
