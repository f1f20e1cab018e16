"""covalent-slurm-plugin's parameters, mapped onto a SlurmSession and a JobSpec. Pure: no I/O, no covalent.

Three steps, each a function:

- `resolve` merges what the user passed, the `[executors.slurm]` config section and the
  defaults into one plain dict (what the executor keeps as its attributes). A value the user passed wins
  even when it is falsy (`options={}`, `poll_freq=0`, `cleanup=False`); only `None` means "not
  given".
- `session_settings` picks the connection and session settings out of it: a frozen, hashable
  `SessionSettings`, which also keys the shared sessions of a server.
- `job_spec` builds the [`JobSpec`][slurmbatch.JobSpec] of one task.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from posixpath import join
from typing import Any

import attrs

from slurmbatch.one_time_codes import totp_answers
from slurmbatch.spec import JobSpec, OptionValue
from slurmbatch.transport.select import checked_transport

__all__ = [
    "MIN_POLL_FREQ",
    "PARAMETERS",
    "PLUGIN_DEFAULTS",
    "SessionSettings",
    "job_spec",
    "resolve",
    "session_settings",
]

PLUGIN_DEFAULTS: dict[str, Any] = {
    "username": "",
    "address": "",
    "ssh_key_file": "",
    "remote_workdir": "covalent-workdir",
    "create_unique_workdir": False,
    "options": {},
    "variables": {},
    "conda_env": "",
    "prerun_commands": [],
    "postrun_commands": [],
    "use_srun": True,
    "srun_options": {},
    "srun_append": "",
    "poll_freq": 5,
    "cleanup": True,
    "cache_dir": str(Path.home() / ".config/covalent/executor_plugins/covalent-slurm-cache"),
    "ignore_versions": False,
    "known_hosts": "",
    "verify_host_key": True,
    "ssh_config": "",
    "python": "python3",
    "max_connections": 2,
    "max_channels": 8,
    "transport": "auto",
}
"""The defaults Covalent writes into the `[executors.slurm]` config section (TOML: no `None`)."""

# Defaults kept out of the config section. `None` cannot be written to TOML. And Covalent merges plugin
# defaults into the config by replacing every *empty* value it finds, so a user's `bashrc_path = ""`
# (source nothing) or `slurm_path = ""` (load the slurm module) would silently become the default again.
_UNLISTED_DEFAULTS: dict[str, Any] = {
    "cert_file": None,
    "port": None,
    "bashrc_path": "$HOME/.bashrc",
    "slurm_path": "/usr/bin",
    "control_path": "",
    "totp_secret_file": "",
}

PARAMETERS: tuple[str, ...] = (*PLUGIN_DEFAULTS, *_UNLISTED_DEFAULTS)
"""Every parameter the executor takes from the config, in a stable order."""

MIN_POLL_FREQ = 1.0
"""The shortest scheduler poll interval, in seconds; smaller `poll_freq` values are raised to it."""

# Longest interval between scheduler queries while nothing changes. Finished jobs are noticed by their
# result files at once, so this only bounds how late a job that died without a result is noticed.
_MAX_STATUS_INTERVAL = 30.0

_KINDS: dict[str, tuple[type, ...]] = {
    "username": (str,),
    "address": (str,),
    "ssh_key_file": (str,),
    "cert_file": (str,),
    "remote_workdir": (str,),
    "create_unique_workdir": (bool,),
    "options": (dict,),
    "variables": (dict,),
    "conda_env": (str,),
    "prerun_commands": (list, tuple, str),
    "postrun_commands": (list, tuple, str),
    "use_srun": (bool,),
    "srun_options": (dict,),
    "srun_append": (str,),
    "bashrc_path": (str,),
    "slurm_path": (str,),
    "poll_freq": (int, float),
    "cleanup": (bool,),
    "cache_dir": (str,),
    "ignore_versions": (bool,),
    "port": (int,),
    "known_hosts": (str,),
    "verify_host_key": (bool,),
    "ssh_config": (str, list, tuple),
    "python": (str,),
    "max_connections": (int,),
    "max_channels": (int,),
    "transport": (str,),
    "control_path": (str,),
    "totp_secret_file": (str,),
}

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# sbatch options the executor sets itself: the SDK always passes --parsable, and the job's working
# directory is remote_workdir (the plugin overwrote a user's chdir the same way).
_MANAGED_SBATCH_OPTIONS = frozenset({"parsable", "chdir", "D"})
# Where Slurm's commands live on nearly every system; exporting it again changes nothing.
_STANDARD_SLURM_PATH = "/usr/bin"
_LOAD_SLURM_MODULE = [
    "source /etc/profile",
    "if module whatis slurm &> /dev/null; then module load slurm; fi",
]


def resolve(given: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Merge explicit arguments over the config section over the defaults; validate the types.

    `given` holds the constructor's arguments (`None` = not given); `config` the
    `[executors.slurm]` section. Key and certificate paths are made absolute here, as the plugin did.
    Raises `TypeError` for an unknown parameter or a value of the wrong type.
    """
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        raise TypeError(
            f"SlurmExecutor got unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(PARAMETERS)}."
        )
    defaults = {**PLUGIN_DEFAULTS, **_UNLISTED_DEFAULTS}
    resolved: dict[str, Any] = {}
    for name in PARAMETERS:
        value = given.get(name)
        if value is None:
            value = config.get(name)
        if value is None:
            value = defaults[name]
        # Copies: the executor's attributes must not share dicts or lists with the config or the caller.
        resolved[name] = copy.deepcopy(value)
        _check_kind(name, resolved[name])
    for name in ("ssh_key_file", "cert_file"):
        if resolved[name]:
            resolved[name] = str(Path(resolved[name]).expanduser().resolve())
    return resolved


def _check_kind(name: str, value: Any) -> None:
    if value is None:
        return
    kinds = _KINDS[name]
    numeric = kinds == (int,) or kinds == (int, float)
    if not isinstance(value, kinds) or (numeric and isinstance(value, bool)):
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise TypeError(f"SlurmExecutor {name} must be a {expected}, not {value!r} ({type(value).__name__}).")


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Everything a [`SlurmSession`][slurmbatch.SlurmSession] is opened with; tasks with equal settings share one."""

    host: str
    port: int | None
    user: str | None
    key_file: str | None
    cert_file: str | None
    known_hosts: str | None
    verify_host_key: bool
    ssh_config: tuple[str, ...] | None
    remote_workdir: str
    python: str
    check_remote_python: bool
    max_connections: int
    max_channels: int
    status_interval: tuple[float, float]
    cleanup: bool
    slurm_setup: tuple[str, ...] = ()
    transport: str = "auto"
    control_path: str | None = None
    totp_secret_file: str | None = None

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `SlurmSession(self.host, **kwargs)` (the certificate is not one of them)."""
        kwargs: dict[str, Any] = {
            "user": self.user,
            "port": self.port,
            "key_file": self.key_file,
            "known_hosts": self.known_hosts,
            "verify_host_key": self.verify_host_key,
            "remote_workdir": self.remote_workdir,
            "python": self.python,
            "check_remote_python": self.check_remote_python,
            "max_connections": self.max_connections,
            "max_channels": self.max_channels,
            "status_interval": self.status_interval,
            "cleanup": self.cleanup,
            "slurm_setup": self.slurm_setup,
        }
        if self.ssh_config is not None:
            kwargs["ssh_config"] = self.ssh_config
        if self.transport != "auto":
            kwargs["transport"] = self.transport
        if self.control_path is not None:
            kwargs["control_path"] = self.control_path
        if self.totp_secret_file is not None:
            # Read at each session's opening, never kept in the settings (they travel in logs and keys).
            kwargs["kbdint"] = totp_answers(_read_secret(self.totp_secret_file))
        return kwargs


def session_settings(params: Mapping[str, Any]) -> SessionSettings:
    """The session settings of resolved `params`; raises `ValueError` for unusable values."""
    host = params["address"]
    if not host:
        raise ValueError(
            "SlurmExecutor needs an address: the login node's host name, or a Host alias of your ssh config. "
            "Set it in the [executors.slurm] config section or pass address=."
        )
    if params["cert_file"] and not params["ssh_key_file"]:
        raise ValueError("SlurmExecutor cert_file needs ssh_key_file: the private key the certificate signs.")
    workdir = params["remote_workdir"]
    if not workdir.strip():
        raise ValueError(
            "SlurmExecutor remote_workdir is empty; name a directory on the cluster (a relative path is "
            "taken from your home directory), e.g. 'covalent-workdir'."
        )
    for name in ("max_connections", "max_channels"):
        if params[name] < 1:
            raise ValueError(f"SlurmExecutor {name} must be at least 1, not {params[name]}.")
    poll = max(float(params["poll_freq"]), MIN_POLL_FREQ)
    return SessionSettings(
        host=host,
        port=params["port"],
        user=params["username"] or None,
        key_file=params["ssh_key_file"] or None,
        cert_file=params["cert_file"] or None,
        known_hosts=params["known_hosts"] or None,
        verify_host_key=params["verify_host_key"],
        ssh_config=_ssh_config(params["ssh_config"]),
        remote_workdir=workdir,
        python=params["python"],
        # Outside the job, the login node's python is not the one a conda environment provides.
        check_remote_python=not params["ignore_versions"] and not params["conda_env"],
        max_connections=params["max_connections"],
        max_channels=params["max_channels"],
        status_interval=(poll, max(poll, _MAX_STATUS_INTERVAL)),
        cleanup=params["cleanup"],
        # As the plugin did: sbatch, squeue and scancel run on the login node after these lines.
        slurm_setup=tuple(_slurm_path_lines(params["slurm_path"])),
        transport=checked_transport(params["transport"], params["control_path"] or None),
        control_path=params["control_path"] or None,
        totp_secret_file=params["totp_secret_file"] or None,
    )


def _read_secret(path: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as error:
        raise ValueError(
            f"SlurmExecutor totp_secret_file {path!r} cannot be read ({error.strerror or error}); it must hold "
            "the base32 TOTP secret your site gave, readable by the user running the Covalent server."
        ) from None


def _ssh_config(value: str | Sequence[str]) -> tuple[str, ...] | None:
    """`""` reads the default `~/.ssh/config` (None); a path or a list names the files; `[]` none."""
    if isinstance(value, str):
        return (value,) if value else None
    return tuple(str(path) for path in value)


def job_spec(params: Mapping[str, Any], *, dispatch_id: str, node_id: int | str, retries: int = 0) -> JobSpec:
    """The [`JobSpec`][slurmbatch.JobSpec] of task `node_id` of dispatch `dispatch_id`.

    `retries` (the executor's Covalent `retries`) is how many times a job that ended by a node
    failure or a preemption is submitted again (`JobSpec.retries` with its default `retry_on`); an
    exception raised by the task itself is not retried.

    The batch script runs, in this order: `cd` to the working directory (`remote_workdir`, or
    `<remote_workdir>/<dispatch_id>/node_<node_id>` with `create_unique_workdir`), `source` of
    `bashrc_path`, Slurm's `PATH`, the `variables` exports, `conda activate` (only with a
    `conda_env`), the prerun commands, the function (inside `srun` with `use_srun`), the postrun
    commands.
    """
    use_srun: bool = params["use_srun"]
    workdir = params["remote_workdir"]
    setup = [_cd_line(workdir, f"{dispatch_id}/node_{node_id}" if params["create_unique_workdir"] else None)]
    if params["bashrc_path"]:
        # Unquoted, as the plugin wrote it: the default $HOME/.bashrc must expand.
        setup.append(f"source {params['bashrc_path']}")
    setup += _slurm_path_lines(params["slurm_path"])
    setup += [_export_line(name, value) for name, value in params["variables"].items()]
    return JobSpec(
        options=_options(params["options"], drop=_MANAGED_SBATCH_OPTIONS),
        use_srun=use_srun,
        # JobSpec refuses srun settings without srun; the plugin silently ignored them.
        srun_options=_options(params["srun_options"]) if use_srun else {},
        srun_append=params["srun_append"] if use_srun else "",
        setup=setup,
        prerun_commands=_lines(params["prerun_commands"]),
        postrun_commands=_lines(params["postrun_commands"]),
        conda_env=params["conda_env"] or None,
        job_name=f"covalent-{node_id}-{dispatch_id}",
        # One job per task, named like the plugin's: a task's job id is its Covalent job handle.
        coalesce=False,
        retries=max(0, int(retries)),
    )


def _options(raw: Mapping[str, Any], drop: frozenset[str] = frozenset()) -> dict[str, OptionValue]:
    """Plugin-style options: `""` (and `None`) ask for a bare flag, as `exclusive = ""` did."""
    options: dict[str, OptionValue] = {}
    for key, value in raw.items():
        if key in drop:
            continue
        options[key] = True if value is None or (isinstance(value, str) and value == "") else value
    return options


def _lines(commands: str | Sequence[str]) -> list[str]:
    # A multi-line item worked with the plugin (it joined items with newlines): keep it working.
    items = [commands] if isinstance(commands, str) else list(commands)
    lines: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"SlurmExecutor commands must be strings, not {item!r} ({type(item).__name__}).")
        lines += item.splitlines() or [""]
    return lines


def _shell_path(path: str) -> str:
    """`path` for bash, with a relative path (or `~/...`) taken from the home directory, as ssh does."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


def _cd_line(workdir: str, unique: str | None) -> str:
    if unique is None:
        return f"cd -- {_shell_path(workdir)} || exit 1"
    target = _shell_path(join(workdir, unique))
    return f"mkdir -p -- {target} && cd -- {target} || exit 1"


def _slurm_path_lines(slurm_path: str) -> list[str]:
    if not slurm_path:
        return list(_LOAD_SLURM_MODULE)
    if slurm_path == _STANDARD_SLURM_PATH:
        return []
    return [f'export PATH="$PATH":{shlex.quote(slurm_path)}']


def _export_line(name: object, value: object) -> str:
    if not isinstance(name, str) or not _SHELL_NAME.fullmatch(name):
        raise ValueError(
            f"SlurmExecutor variables: {name!r} is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)."
        )
    # Inside double quotes, exactly as the plugin wrote it, so that "$PATH:/opt/bin" keeps expanding.
    return f'export {name}="{value}"'
