"""SlurmSession: run Python functions as Slurm jobs on a cluster reached over SSH."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from . import _probe
from ._errors import PayloadError, SessionClosedError
from ._job_script import render_job_script
from ._journal import Journal, JournalEntry, default_journal_path
from ._progress import require_rich, show_progress
from ._reattach import reattach
from ._remote_layout import new_token
from ._session_checks import (
    UNSET,
    checked_cancel_timeout,
    checked_interval,
    checked_max_argument_bytes,
    connect_settings,
    slurm_setup_text,
)
from ._session_files import SessionFiles
from ._submitter import ArrayShape, SubmitRequest
from .future import JobFuture
from .payload import ArgumentStore, FunctionBlob, pack_function
from .rpc_budget import RpcBudget, TokenBucket
from .slurm.release import ClusterInfo
from .spec import JobSpec
from .transport import ConnectSettings, SSHPool
from .transport.kbdint import KbdintHandler
from .transport.select import TransportName, checked_transport

__all__ = ["SlurmSession"]

logger = logging.getLogger("slurmbatch")
T = TypeVar("T")


class SlurmSession(SessionFiles):
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
    job that is still live, with one ``scancel``, shielded from that cancellation; submissions still
    under way are waited for (up to ``cancel_timeout``) and their jobs cancelled with the rest. After
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
            session's jobs fail with a :class:`ConnectError` that says why: the jobs may still be
            running, the journal keeps them and their remote files stay, for :meth:`reattach`.
        cancel_timeout: Seconds the block's exit may spend on each of: waiting for submissions still
            under way, and cancelling live jobs. Jobs it could not cancel in time are named (in the log
            and in their futures' errors), never silently left behind.
        kbdint: Answers the login node's keyboard-interactive prompts (multi-factor sites: a one-time
            code, a password): ``kbdint(name, instructions, prompts) -> answers``, one answer per
            ``(text, echo)`` prompt, a plain function (run in a worker thread) or a coroutine function
            (run on this event loop). It is called at every login, reconnects included, never twice at
            once: :func:`totp_answers` (a TOTP secret) and :func:`terminal_prompt` are ready-made. A
            login the site refuses raises :class:`ConnectError` saying so. Keep ``connect_timeout``
            longer than a person needs to type a code.
        transport: ``"openssh"`` runs every command over your running OpenSSH ControlMaster (``ssh -S
            <ControlPath> host cmd``): no login, key or code of the session's own; files then travel
            over exec channels, at most ``max_channels`` commands at once. ``"asyncssh"`` always opens
            connections of its own. ``"auto"`` (default) takes the master when the ssh config names a
            ``ControlPath`` for ``host`` and a master answers there. A master that is gone (and does not
            come back within ``reconnect_deadline``) raises :class:`ConnectError` saying to run ``ssh
            host`` in a terminal.
        control_path: The master's socket, when the ssh config does not name it.
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
        ssh_config: str | Path | Sequence[str | Path] = UNSET,
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
        cancel_timeout: float = 60.0,
        kbdint: KbdintHandler | None = None,
        transport: TransportName = "auto",
        control_path: str | None = None,
    ) -> None:
        self.settings: ConnectSettings = connect_settings(
            host,
            user=user,
            port=port,
            key_file=key_file,
            cert_file=cert_file,
            passphrase=passphrase,
            known_hosts=known_hosts,
            verify_host_key=verify_host_key,
            ssh_config=ssh_config,
            connect_timeout=connect_timeout,
            kbdint=kbdint,
        )
        _probe.python_command(python)  # fail now on an empty interpreter name
        if default_spec is not None and not isinstance(default_spec, JobSpec):
            raise TypeError(f"default_spec must be a JobSpec, not {type(default_spec).__name__}")
        self._python = python
        self._check_remote_python = check_remote_python
        self._workdir = remote_workdir
        self._max_connections = max_connections
        self._max_channels = max_channels
        SSHPool.check_limits(
            max_connections=max_connections, max_channels=max_channels, reconnect_deadline=reconnect_deadline
        )
        self._transport = checked_transport(transport, control_path)
        self._control_path = control_path
        self._status_interval = checked_interval(status_interval)
        self._reconnect_deadline = float(reconnect_deadline)
        self._cancel_timeout = checked_cancel_timeout(cancel_timeout)
        if not isinstance(journal, (str, Path, bool)):
            raise TypeError(f"journal must be a file path, True or False, not {type(journal).__name__}")
        self._journal_path = default_journal_path() if journal is True else (journal or None)
        self._max_argument_bytes = checked_max_argument_bytes(max_argument_bytes)
        self._journal: Journal | None = None
        #: This session's name in the journal: pass it to :meth:`reattach` from another process.
        self.id = new_token().replace("sb-", "session-", 1)
        self._cleanup = cleanup
        self._default_spec = default_spec or JobSpec()
        if rpc_budget is not None and not isinstance(rpc_budget, RpcBudget):
            raise TypeError(f"rpc_budget must be an RpcBudget, not {type(rpc_budget).__name__}")
        self._rpc_budget = rpc_budget
        self._slurm_setup = slurm_setup_text(slurm_setup)
        self._budget: TokenBucket | None = None
        self._state = "new"
        self._detached = False
        self._stack = contextlib.AsyncExitStack()
        # Nothing remembered by identity: an object changed in place between two submits must not travel
        # stale. Large arguments are still uploaded once per content (their hash).
        self._arguments = ArgumentStore(remembered=0, max_bytes=max_argument_bytes)
        self.max_array_size = 1001
        #: What the session learnt about the cluster when it opened (:class:`ClusterInfo`): the Slurm
        #: version, whether accounting answers, MaxArraySize, MinJobAge. An untested release is a
        #: warning in the log, not a failure.
        self.cluster_info = ClusterInfo()

    async def __aenter__(self) -> SlurmSession:
        await self._enter()
        return self

    def detach(self) -> list[str]:
        """Let the jobs run on after the ``async with`` block; return the ids of those still live.

        Their results stay in the remote work directory, and the journal keeps them: a later session
        (in this process or another) collects them with ``await session.reattach(<this session's id>)``.
        Until the block ends their futures resolve as usual; awaited after it, a future of a job that
        had not finished raises :class:`SessionClosedError` saying it was detached.
        """
        self._require_open()
        self._detached = True
        return [future.job_id for future in self._poller.live()]

    async def reattach(self, session_id: str | None = None) -> list[JobFuture[Any]]:
        """Take over the jobs an earlier session left uncollected; return a future for each.

        ``session_id`` is that session's :attr:`id`; without it, every earlier session on the same login
        node and work directory that left jobs behind and is no longer open (it detached, crashed, or
        its process was killed); sessions still open, in this process or another, are skipped. The jobs
        are then followed and collected like this session's own. A job whose submission was cut short
        is looked up, never submitted again: if it never reached sbatch, its future fails with
        :class:`SubmissionError`.

        Raises :class:`ValueError` if the session used another work directory, is still open, or the
        journal is off.
        """
        self._require_open()
        if self._journal is None:
            raise ValueError("reattach() reads the journal, and this session was opened with journal=False.")

        def new_future(entry: JournalEntry, job_id: str | None) -> JobFuture[Any]:
            self._jobs.collected[entry.token] = None
            return JobFuture(
                self, job_id=job_id or "(never submitted)", token=entry.token, source_file=entry.source_file
            )

        return await reattach(
            self._journal,
            session_id,
            host=self.settings.host,
            workdir=self._layout.workdir,
            poller=self._poller,
            submitter=self._submitter,
            new_future=new_future,
        )

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
        submitted in either case. Concurrent calls are sent to the login node together. A call still
        queued when the session ends raises :class:`SessionClosedError`.
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
        ``progress=True`` shows a progress bar (needs ``rich``: an :class:`ImportError` says so before
        anything is submitted) until every call has finished.

        A map is submitted whole or not at all: if sbatch refuses one of its arrays, the arrays it had
        already accepted are cancelled, and the :class:`SubmissionError` says so.
        """
        self._require_open()
        if progress:
            require_rich()
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
        futures: list[JobFuture[T]] = [r.future for r in requests if r.future is not None]
        refused = [r.error for r in requests if r.error is not None]
        if refused:
            raise await self._jobs.undo_map(futures, refused[0])
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
        return render_job_script(self._layout, self._python, spec, blob, token, array)

    def _on_submitted(self, request: SubmitRequest) -> None:
        assert request.job_id is not None
        if request.future is not None:  # the next attempt of a retried call
            request.future._retried(request.job_id)
            self._poller.track(request.future)
            return
        future: JobFuture[Any] = JobFuture(
            self, job_id=request.job_id, token=request.token, source_file=request.function.source_file
        )
        request.future = future
        self._retries.remember(request)
        self._poller.track(future)
        self._jobs.collected[request.token] = None
        if self.cluster_info.parsable_cluster is None:
            # The first answer tells whether this site's sbatch --parsable names the cluster (123;name).
            self.cluster_info = attrs.evolve(self.cluster_info, parsable_cluster=";" in request.job_id)

    # ------------------------------------------------------------------------------- jobs
    async def _cancel_jobs(self, futures: Sequence[JobFuture[Any]]) -> None:
        self._retries.cancelled(futures)  # before scancel: a retry under way must not outlive the cancel
        await self._jobs.cancel(futures)

    def _require_open(self, *, allow_closing: bool = False) -> None:
        if self._state == "open" or (allow_closing and self._state == "closing"):
            return
        if self._state == "new":
            raise SessionClosedError(
                "The session is not open yet: use it inside `async with SlurmSession(...)`."
            )
        raise SessionClosedError("The session is closed: submit and read jobs inside its `async with` block.")
