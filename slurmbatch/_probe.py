"""What a session learns about the login node in its first remote command. Pure: builds and parses it.

One command creates the private work directory, checks the remote Python and cloudpickle, tells whether
the runner is already there, and reads the few scheduler settings the session needs.
"""

from __future__ import annotations

import re
import shlex

import attrs

from ._errors import RemoteEnvironmentError
from .spec import interpreter_words

__all__ = [
    "RemoteFacts",
    "parse_probe",
    "probe_command",
    "python_check",
    "python_command",
    "workdir_assignment",
    "workdir_lines",
]

_SEP = "@@slurmbatch@@"
_NO_SBATCH = "@@no-sbatch@@"
_CONFIG_KEYS = ("AccountingStorageType", "MaxArraySize", "MinJobAge", "JobCompType", "ClusterName")
_PYTHON_CHECK = (
    # flush: stderr is merged into the same pipe, and an import error must not overtake the version line.
    "import sys; print('%d.%d' % sys.version_info[:2], flush=True); import cloudpickle; "
    "print(cloudpickle.__version__)"
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
    if not isinstance(python, str):
        raise TypeError(
            f"python must be a string naming an interpreter on the cluster, e.g. 'python3', not "
            f"{python!r} (of type {type(python).__name__})"
        )
    words = interpreter_words(python, setting="python")
    if not words:
        raise ValueError(
            "python must name an interpreter on the cluster, e.g. 'python3', not an empty string"
        )
    return words


_USER_HOME = re.compile(r"~([A-Za-z0-9._][A-Za-z0-9._-]*)(/.*)?", re.DOTALL)
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))(/.*)?", re.DOTALL)


def _rest(rest: str | None) -> str:
    """The part of a path after its first word, quoted: ``/a b`` -> ``/'a b'``."""
    if not rest or rest == "/":
        return rest or ""
    return "/" + shlex.quote(rest[1:])


def workdir_assignment(workdir: str) -> list[str]:
    """Shell lines that set ``$W`` to ``workdir`` as the login node sees it, or exit with status 3.

    ``~/x`` and relative paths are taken from the home directory (where commands start), ``~user/x``
    from that user's home, and ``$VAR/x`` (or ``${VAR}/x``) from that variable, e.g. ``$SCRATCH``: these
    are expanded on the login node. Anything else is taken literally.
    """
    if workdir == "~":
        return ["W=."]
    if workdir.startswith("~/"):
        return [f"W={shlex.quote(workdir[2:])}"]
    if user := _USER_HOME.fullmatch(workdir):
        name, rest = user[1], user[2]
        return [
            f"W=~{name}{_rest(rest)}",
            # Not expanded: the login node knows no such user.
            f'[ "${{W#\\~}}" = "$W" ] || {{ echo "remote_workdir starts with ~{name}, but the login node '
            f'knows no user {name}" >&2; exit 3; }}',
        ]
    if variable := _VARIABLE.fullmatch(workdir):
        name, rest = variable[1] or variable[2], variable[3]
        return [
            f'[ -n "${{{name}:-}}" ] || {{ echo "remote_workdir starts with \\${name}, which is not set (or '
            f'empty) on the login node" >&2; exit 3; }}',
            f'W="${name}"{_rest(rest)}',
        ]
    return [f"W={shlex.quote(workdir)}"]


def workdir_lines(workdir: str) -> list[str]:
    """Shell lines that create the private work directory ``workdir`` (as ``$W``) and its
    subdirectories, or exit with status 3."""
    return [
        "umask 077",
        *workdir_assignment(workdir),
        'mkdir -p -- "$W/fn" "$W/jobs" "$W/results" || exit 3',
        'chmod 700 -- "$W" "$W/fn" "$W/jobs" "$W/results" || exit 3',
    ]


def probe_command(workdir: str, *, python: str | None, runner_name: str, slurm_setup: str = "") -> str:
    """The first command of a session; ``python`` None skips the interpreter check.

    ``slurm_setup`` (shell lines, each ending in a newline) runs before the Slurm commands are looked for.
    """
    check = (
        f'{shlex.join([*python_command(python), "-c", _PYTHON_CHECK])} 2>&1 || echo "exit status $?"'
        if python is not None
        else "echo unchecked"
    )
    keys = "|".join(_CONFIG_KEYS)
    return "\n".join(
        [
            *workdir_lines(workdir),
            'cd -- "$W" || exit 3',
            "pwd",
            f"echo {_SEP}",
            f"test -f {shlex.quote(runner_name)} && echo present || echo missing",
            f"echo {_SEP}",
            check,
            f"echo {_SEP}",
            slurm_setup.rstrip("\n") or ":",
            f"command -v sbatch >/dev/null 2>&1 || echo {_NO_SBATCH}",
            f"scontrol show config 2>&1 | grep -E '^({keys}) '",
            "exit 0",
        ]
    )


def parse_probe(exit_status: int, stdout: str, stderr: str, *, workdir: str) -> RemoteFacts:
    """Parse :func:`probe_command`'s output; raise :class:`RemoteEnvironmentError` in plain words."""
    if exit_status == 3 or stdout.count(_SEP) < 3:
        # mkdir repeats its complaint once per subdirectory; say it once.
        lines = dict.fromkeys(line.strip() for line in (stderr.strip() or stdout.strip()).splitlines())
        said = "; ".join(line for line in lines if line) or f"exit status {exit_status}"
        raise RemoteEnvironmentError(
            f"Cannot create or enter the remote work directory {workdir!r} on the login node: {said}. "
            "Pass remote_workdir= a directory you can write to (a relative path is taken from your home)."
        )
    path, runner, python_report, config_text = (part.strip() for part in stdout.split(_SEP + "\n", 3))
    if _NO_SBATCH in config_text:
        raise RemoteEnvironmentError(
            "Slurm's commands (sbatch) are not on the login node's PATH for non-interactive SSH commands. "
            "Pass slurm_setup= the shell lines that make them available, e.g. ['module load slurm'] or "
            "['export PATH=\"$PATH\":/opt/slurm/bin']."
        )
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
    lines = [line.strip() for line in report.splitlines()]
    # The version line comes first, unless a wrapper script printed something before it.
    at = next((i for i, line in enumerate(lines) if re.fullmatch(r"\d+\.\d+", line)), None)
    if at is None:
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} could not run on the login node: {report.strip() or 'no output'}. "
            "Pass python= an interpreter that exists on the cluster (e.g. '/usr/bin/python3'), or "
            "check_remote_python=False if it only exists on compute nodes (after JobSpec.setup)."
        )
    remote_python = lines[at]
    if remote_python != local_python:
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} is {remote_python}, but this client runs Python {local_python}: "
            "pickled functions only load under the same minor version. Use the same minor version on both "
            f"sides (e.g. a venv or conda env with Python {local_python} on the cluster, passed as python=)."
        )
    remote_cloudpickle = lines[at + 1] if len(lines) > at + 1 else ""
    if not remote_cloudpickle[:1].isdigit():
        # The import error itself, rather than the "exit status" line the probe adds after it.
        errors = [line for line in lines if "Error" in line] or [lines[-1]]
        raise RemoteEnvironmentError(
            f"cloudpickle is not importable by the remote Python {python!r} ({errors[-1]}). "
            f"Install it there: `{python} -m pip install --user 'cloudpickle=={local_cloudpickle}'`."
        )
    if remote_cloudpickle.split(".")[0] != local_cloudpickle.split(".")[0]:
        raise RemoteEnvironmentError(
            f"The remote Python {python!r} has cloudpickle {remote_cloudpickle}, but this client has "
            f"{local_cloudpickle}: payloads only load under the same major version. Install "
            f"cloudpickle=={local_cloudpickle} on the cluster side."
        )
