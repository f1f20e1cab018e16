"""The `slurm` executor of Covalent, on slurmbatch: a drop-in replacement for covalent-slurm-plugin.

Covalent names an executor after the last component of its module, so this module gives the executor
`"slurm"`, the config section `[executors.slurm]` and `ct.executor.SlurmExecutor`, exactly as the
plugin did. Every task of a server with the same connection settings shares one bounded pool of SSH
connections and one status loop (see `slurmbatch_covalent._shared`); the compute nodes need Python
and cloudpickle, not covalent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Callable
from typing import Any

import anyio
from covalent._shared_files.config import get_config
from covalent._shared_files.exceptions import TaskCancelledError
from covalent.executor.base import AsyncBaseExecutor

from slurmbatch import JobCancelled, JobFuture

from ._payload import Call, unwrap, wrap_output
from ._shared import SharedSession, cancel_job, lease
from .params import PARAMETERS, PLUGIN_DEFAULTS, job_spec, resolve, session_settings

__all__ = ["EXECUTOR_PLUGIN_NAME", "SlurmExecutor", "SlurmTaskError"]

logger = logging.getLogger("slurmbatch.covalent")

EXECUTOR_PLUGIN_NAME = "SlurmExecutor"

_EXECUTOR_PLUGIN_DEFAULTS: dict[str, Any] = dict(PLUGIN_DEFAULTS)


def _warn_if_plugin_installed() -> None:
    if importlib.util.find_spec("covalent_slurm_plugin") is None:
        return
    message = (
        "covalent-slurm-plugin is installed next to slurmbatch[covalent]. Both register the Covalent executor "
        "'slurm' (ct.executor.SlurmExecutor and the [executors.slurm] config section), and whichever Covalent "
        "loads last silently wins. Uninstall one of them: `pip uninstall covalent-slurm-plugin`."
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


_warn_if_plugin_installed()


class SlurmTaskError(RuntimeError):
    """A task's Slurm job failed; the message carries the remote exception and its traceback."""


class SlurmExecutor(AsyncBaseExecutor):  # type: ignore[misc,unused-ignore]  # Any without covalent
    """Runs each Covalent task as a Slurm job on a cluster reached over SSH.

    Takes every parameter of covalent-slurm-plugin 0.18, with the same meaning. A parameter left out (or
    `None`) comes from the `[executors.slurm]` config section, else from the default; a value given
    here always wins, even a falsy one such as `options={}`.

    Args:
        username: Login name on the cluster; default from the ssh config, else the local user.
        address: The login node: host name, address, or a `Host` alias of the ssh config. Required.
        ssh_key_file: Private key file; default: ssh-agent keys and the ssh config's IdentityFile.
        cert_file: OpenSSH certificate of that key, for sites that sign user keys.
        remote_workdir: Working directory of the jobs, made private to you; relative paths are taken from
            the home directory. Default `covalent-workdir`.
        create_unique_workdir: Run each task in `<remote_workdir>/<dispatch_id>/node_<node_id>`.
        options: `#SBATCH` options, e.g. `{"time": "01:00:00", "exclusive": ""}`: one-letter keys
            give `-k v`, longer ones `--key=v`; `""` (or True) gives a bare flag, False leaves the
            option out, lists join with commas.
        variables: Environment variables to export, written as `export K="V"` (so `$VAR` expands).
        conda_env: A conda environment to activate; none when empty.
        prerun_commands: Shell lines run just before the task.
        postrun_commands: Shell lines run just after the task.
        use_srun: Run the task through `srun` (every task of the job runs it; the value is rank 0's).
            Set False when the function calls srun or mpirun itself.
        srun_options: Options of that `srun`, with the same rules as `options`.
        srun_append: A command between `srun` and the task, e.g. a profiler.
        bashrc_path: A file the job sources first; `""` sources none. Default `$HOME/.bashrc`.
        slurm_path: The directory of Slurm's commands, added to PATH on the login node before sbatch,
            squeue and scancel run, and in the job; `""` loads the `slurm` environment module instead.
            Default `/usr/bin`.
        poll_freq: Seconds between scheduler queries (at least 1). Finished jobs are noticed by their
            result files without waiting for it.
        cleanup: Remove each task's files from the cluster once its result and output are in.
        cache_dir: Accepted for compatibility; nothing is staged locally any more.
        log_stdout: A file the task's standard output is appended to.
        log_stderr: A file the task's standard error is appended to.
        time_limit: Passed to Covalent's base executor.
        retries: How many times a task's job that ended by a node failure or a preemption is submitted
            again (`JobSpec.retries`); an exception the task raised is not retried. Also passed to
            Covalent's base executor.
        ignore_versions: Skip checking the login node's Python and cloudpickle when the session opens.
        port: SSH port; default from the ssh config, else 22.
        known_hosts: known_hosts file the host key is checked against; default the ssh config's, else
            `~/.ssh/known_hosts`.
        verify_host_key: False accepts any host key (an explicit opt-out; as covalent-slurm-plugin did).
        ssh_config: OpenSSH client config file(s) to honour; `""` means `~/.ssh/config`, `[]` none.
        python: The Python the jobs run (same minor version as the server, with cloudpickle).
        max_connections: Most SSH connections the server opens to this cluster, whatever the task count.
        max_channels: Most channels open at once per connection (below sshd's MaxSessions).
        transport: `"auto"` (default: your OpenSSH ControlMaster when the ssh config names a live
            ControlPath for the address, else connections of its own), `"openssh"` (always the
            master) or `"asyncssh"`.
        control_path: The ControlMaster's socket, when the ssh config does not name it.
        totp_secret_file: A file holding the base32 TOTP secret of a multi-factor login node: every
            login (and reconnect) answers the one-time-code prompt with the current code.
    """

    def __init__(
        self,
        username: str | None = None,
        address: str | None = None,
        ssh_key_file: str | None = None,
        cert_file: str | None = None,
        remote_workdir: str | None = None,
        create_unique_workdir: bool | None = None,
        options: dict[str, Any] | None = None,
        variables: dict[str, Any] | None = None,
        conda_env: str | None = None,
        prerun_commands: list[str] | None = None,
        postrun_commands: list[str] | None = None,
        use_srun: bool | None = None,
        srun_options: dict[str, Any] | None = None,
        srun_append: str | None = None,
        bashrc_path: str | None = None,
        slurm_path: str | None = None,
        poll_freq: float | None = None,
        cleanup: bool | None = None,
        cache_dir: str | None = None,
        *,
        log_stdout: str = "",
        log_stderr: str = "",
        time_limit: int = -1,
        retries: int = 0,
        ignore_versions: bool | None = None,
        port: int | None = None,
        known_hosts: str | None = None,
        verify_host_key: bool | None = None,
        ssh_config: str | list[str] | None = None,
        python: str | None = None,
        max_connections: int | None = None,
        max_channels: int | None = None,
        transport: str | None = None,
        control_path: str | None = None,
        totp_secret_file: str | None = None,
    ) -> None:
        given = {name: value for name, value in locals().items() if name in PARAMETERS}
        params = resolve(given, _config_section())
        super().__init__(
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            cache_dir=params["cache_dir"],
            time_limit=time_limit,
            retries=retries,
        )
        # Plain values only: Covalent sends the attributes as JSON and rebuilds the executor on the server.
        for name, value in params.items():
            setattr(self, name, value)

    def _params(self) -> dict[str, Any]:
        # After from_dict() the attributes are the client's; a parameter it lacks takes its default.
        return resolve({name: vars(self).get(name) for name in PARAMETERS}, {})

    async def run(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
    ) -> Any:
        """Run the task as a Slurm job and return its output; see the class docstring.

        Raises `TaskCancelledError` when Covalent cancelled the task, and
        `SlurmTaskError` (remote exception and traceback in its message) when the job failed.
        """
        dispatch_id = str(task_metadata["dispatch_id"])
        node_id = task_metadata["node_id"]
        params = self._params()
        settings = session_settings(params)
        retries = getattr(self, "retries", 0)
        spec = job_spec(
            params,
            dispatch_id=dispatch_id,
            node_id=node_id,
            retries=retries if isinstance(retries, int) and not isinstance(retries, bool) else 0,
        )
        call = unwrap(function, args, kwargs)
        if await self._cancel_requested():
            raise TaskCancelledError(
                f"Task {node_id} of dispatch {dispatch_id} was cancelled before submission."
            )
        async with lease(settings) as shared:
            session = await shared.ready()
            future = await session.submit(call.fn, call.args, spec, kwargs=call.kwargs)
            shared.track(future)
            try:
                return await self._outcome(shared, future, call, task_metadata)
            finally:
                shared.untrack(future)

    async def _outcome(
        self, shared: SharedSession, future: JobFuture[Any], call: Call, task_metadata: dict[str, Any]
    ) -> Any:
        error: Exception | None = None
        try:
            await self._set_job_handle(future.job_id)
            if await self._cancel_requested():
                shared.cancelled.add(future.job_id)
                await future.cancel()
            try:
                value = await future
            except Exception as exc:  # the job's own failure, reported below
                error = exc
        except BaseException:
            # run() itself failed or was cancelled (the server is stopping): don't leave the job running.
            with anyio.CancelScope(shield=True), anyio.move_on_after(30), contextlib.suppress(Exception):
                await future.cancel()
            raise
        stdout, stderr = await _job_output(future)
        shared.release(future)
        for text, stream in ((stdout, self.task_stdout), (stderr, self.task_stderr)):
            if stream is not None:
                print(text, end="", file=stream)
        if error is None:
            return wrap_output(value) if call.covalent_task else value
        if isinstance(error, JobCancelled) and shared.was_cancelled(future):
            raise TaskCancelledError(f"Slurm job {future.job_id} was cancelled.") from error
        # Covalent writes the log files only for tasks that did not raise: write them here.
        await self.write_streams_to_file(
            (stdout, stderr),
            (self.log_stdout, self.log_stderr),
            str(task_metadata["dispatch_id"]),
            str(task_metadata.get("results_dir", "")),
        )
        raise SlurmTaskError(_failure_message(future.job_id, error, shared)) from error

    async def cancel(self, task_metadata: dict[str, Any], job_handle: Any) -> bool:
        """Cancel the task's Slurm job (`scancel`); False when no running task has that job."""
        if job_handle is None or job_handle == "":
            return False
        return await cancel_job(session_settings(self._params()), str(job_handle))

    # Covalent's runtime hooks exist only for executors the server runs (after _init_runtime).
    def _has_runtime(self) -> bool:
        return "_send_queue" in vars(self)

    async def _cancel_requested(self) -> bool:
        return self._has_runtime() and bool(await self.get_cancel_requested())

    async def _set_job_handle(self, job_id: str) -> None:
        if self._has_runtime():
            await self.set_job_handle(job_id)


def _config_section() -> dict[str, Any]:
    try:
        section = get_config("executors.slurm")
    except KeyError:
        return {}
    return dict(section) if isinstance(section, dict) else {}


async def _job_output(future: JobFuture[Any]) -> tuple[str, str]:
    texts = {"stdout": "", "stderr": ""}

    async def read(stream: str) -> None:
        texts[stream] = await (future.stdout() if stream == "stdout" else future.stderr())

    try:
        # Together: the session reads files asked for at the same time over one SFTP session.
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "stdout")
            tg.start_soon(read, "stderr")
        return texts["stdout"], texts["stderr"]
    except Exception as exc:  # the outcome matters more than its logs
        logger.warning("could not read the output of Slurm job %s: %s", future.job_id, exc)
        return "", ""


def _failure_message(job_id: str, error: Exception, shared: SharedSession) -> str:
    if shared.error is not None:
        return (
            f"Slurm job {job_id}: the shared session on {shared.settings.host} failed "
            f"({type(shared.error).__name__}: {shared.error}); the job was cancelled."
        )
    message = f"Slurm job {job_id} failed: {type(error).__name__}: {error}"
    remote_traceback = getattr(error, "remote_traceback", None)
    if isinstance(remote_traceback, str) and remote_traceback.strip():
        message += f"\n\nRemote traceback:\n{remote_traceback.rstrip()}"
    return message
