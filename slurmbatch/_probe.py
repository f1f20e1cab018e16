"""What a session learns about the login node in its first remote command. Pure: builds and parses it.

One command creates the private work directory, checks the remote Python and cloudpickle, tells whether
the runner is already there, and reads the few scheduler settings the session needs.
"""

from __future__ import annotations

import shlex

import attrs

from ._errors import RemoteEnvironmentError

__all__ = ["RemoteFacts", "parse_probe", "probe_command", "python_check", "python_command"]

_SEP = "@@slurmbatch@@"
_CONFIG_KEYS = ("AccountingStorageType", "MaxArraySize", "MinJobAge", "JobCompType", "ClusterName")
_PYTHON_CHECK = (
    "import sys; print('%d.%d' % sys.version_info[:2]); import cloudpickle; print(cloudpickle.__version__)"
)


@attrs.frozen
class RemoteFacts:
    """The login node as the session found it."""

    workdir: str
    runner_present: bool
    python_report: str
    config: dict[str, str]

    @property
    def accounting(self) -> bool:
        """True if slurmdbd keeps job records, so plain ``sacct`` knows purged jobs."""
        return self.config.get("AccountingStorageType", "") == "accounting_storage/slurmdbd"

    @property
    def max_array_size(self) -> int:
        """The cluster's MaxArraySize (Slurm's default 1001 when not reported)."""
        try:
            return int(self.config.get("MaxArraySize", "1001"))
        except ValueError:
            return 1001


def python_command(python: str) -> list[str]:
    """Split a ``python=`` setting into words: it may carry arguments, e.g. ``"/usr/bin/env python3"``."""
    words = shlex.split(python)
    if not words:
        raise ValueError(
            "python must name an interpreter on the cluster, e.g. 'python3', not an empty string"
        )
    return words


def _remote_path(path: str) -> str:
    # Exec'd commands start in the home directory, so "~/x" is just "x"; anything else is quoted as is.
    if path == "~":
        return "."
    return shlex.quote(path[2:] if path.startswith("~/") else path)


def probe_command(workdir: str, *, python: str | None, runner_name: str) -> str:
    """The first command of a session; ``python`` None skips the interpreter check."""
    check = (
        f'{shlex.join([*python_command(python), "-c", _PYTHON_CHECK])} 2>&1 || echo "exit status $?"'
        if python is not None
        else "echo unchecked"
    )
    keys = "|".join(_CONFIG_KEYS)
    return "\n".join(
        [
            "umask 077",
            f"W={_remote_path(workdir)}",
            'mkdir -p -- "$W/fn" "$W/jobs" "$W/results" || exit 3',
            'chmod 700 -- "$W" || exit 3',
            'cd -- "$W" || exit 3',
            "pwd",
            f"echo {_SEP}",
            f"test -f {shlex.quote(runner_name)} && echo present || echo missing",
            f"echo {_SEP}",
            check,
            f"echo {_SEP}",
            f"scontrol show config 2>&1 | grep -E '^({keys}) '",
            "exit 0",
        ]
    )


def parse_probe(exit_status: int, stdout: str, stderr: str, *, workdir: str) -> RemoteFacts:
    """Parse :func:`probe_command`'s output; raise :class:`RemoteEnvironmentError` in plain words."""
    if exit_status == 3 or stdout.count(_SEP) < 3:
        said = stderr.strip() or stdout.strip() or f"exit status {exit_status}"
        raise RemoteEnvironmentError(
            f"Cannot create or enter the remote work directory {workdir!r} on the login node: {said}. "
            "Pass remote_workdir= a directory you can write to (a relative path is taken from your home)."
        )
    path, runner, python_report, config_text = (part.strip() for part in stdout.split(_SEP + "\n", 3))
    config: dict[str, str] = {}
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in _CONFIG_KEYS:
            config[key.strip()] = value.strip()
    return RemoteFacts(
        workdir=path, runner_present=runner == "present", python_report=python_report, config=config
    )


def python_check(report: str, *, python: str, local_python: str, local_cloudpickle: str) -> None:
    """Raise :class:`RemoteEnvironmentError` unless the remote Python can load what this client pickles.

    ``report`` is what the probe's interpreter check printed: ``3.11`` then the cloudpickle version, or an
    error. Same minor Python version and same cloudpickle major version are required.
    """
    if report == "unchecked":
        return
    lines = report.splitlines()
    remote_python = lines[0].strip() if lines else ""
    if not remote_python.replace(".", "").isdigit():
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} could not run on the login node: {report.strip() or 'no output'}. "
            "Pass python= an interpreter that exists on the cluster (e.g. '/usr/bin/python3'), or "
            "check_remote_python=False if it only exists on compute nodes (after JobSpec.setup)."
        )
    if remote_python != local_python:
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} is {remote_python}, but this client runs Python {local_python}: "
            "pickled functions only load under the same minor version. Use the same minor version on both "
            f"sides (e.g. a venv or conda env with Python {local_python} on the cluster, passed as python=)."
        )
    remote_cloudpickle = lines[1].strip() if len(lines) > 1 else ""
    if not remote_cloudpickle[:1].isdigit():
        raise RemoteEnvironmentError(
            f"cloudpickle is not importable by the remote Python {python!r} ({lines[-1].strip() if lines else ''}). "
            f"Install it there: `{python} -m pip install --user 'cloudpickle=={local_cloudpickle}'`."
        )
    if remote_cloudpickle.split(".")[0] != local_cloudpickle.split(".")[0]:
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} has cloudpickle {remote_cloudpickle}, but this client has "
            f"{local_cloudpickle}: payloads only load under the same major version. Install "
            f"cloudpickle=={local_cloudpickle} on the cluster side."
        )
