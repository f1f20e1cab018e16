"""The checks of ``slurmbatch doctor``: each step a session takes when it opens, taken one at a time.

The connection steps come from :mod:`slurmbatch.transport.diagnosis`; the login node's environment from
the session's own probe (:mod:`slurmbatch._probe`), so that doctor and a session never disagree; the
end-to-end step is a real :class:`~slurmbatch.SlurmSession` that runs one tiny job.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import attrs

from .. import _probe
from .._errors import RemoteEnvironmentError, SlurmBatchError
from .._job_script import LOCAL_CLOUDPICKLE, LOCAL_PYTHON
from .._session_checks import slurm_setup_text
from ..session import SlurmSession
from ..slurm.release import TESTED_RELEASES, ClusterInfo
from ..spec import JobSpec
from ..transport import ConnectSettings, SSHPool
from ..transport.diagnosis import ConnectionDiagnosis, diagnose_connection, keyscan_line
from ._session_options import connect_settings_of

__all__ = ["Check", "Verdict", "failed", "run_checks"]

Verdict = Literal["ok", "warn", "fail", "skip"]

#: Seconds the tiny job may take from submission to result before doctor gives up on it.
JOB_DEADLINE = 120.0
_SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")
_RUNNER_ABSENT = "runner-doctor-absent.py"


@attrs.frozen
class Check:
    """One line of the doctor's report: what was checked, the verdict, what was found, what to do."""

    name: str
    verdict: Verdict
    detail: str
    advice: str = ""

    def as_dict(self) -> dict[str, str]:
        """The check as JSON-ready data."""
        return attrs.asdict(self)


async def run_checks(
    host: str, options: dict[str, Any], *, on_check: Callable[[Check], None] = lambda _: None
) -> list[Check]:
    """Run every check against ``host`` with ``options`` (SlurmSession's keyword arguments).

    Each check is passed to ``on_check`` as soon as it is known. A failed step skips the steps that
    need it. Runs under asyncio (the connection diagnosis uses asyncssh directly).
    """
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        on_check(check)

    settings = connect_settings_of(host, options)
    diagnosis = await diagnose_connection(settings)
    for check in connection_checks(diagnosis, settings):
        add(check)
    if not diagnosis.logged_in:
        return checks
    for check in await environment_checks(settings, options):
        add(check)
    if any(check.verdict == "fail" for check in checks):
        add(Check("test job", "skip", "not run: fix the failures above first"))
        return checks
    add(await job_check(host, options))
    return checks


def connection_checks(diagnosis: ConnectionDiagnosis, settings: ConnectSettings) -> list[Check]:
    """The connection steps as report lines. Pure."""
    target = diagnosis.target
    checks: list[Check] = []
    if diagnosis.jump:
        checks.append(Check("address", "ok", f"{target.host}:{target.port} {diagnosis.jump}"))
    elif diagnosis.resolve_error:
        return [
            Check(
                "address",
                "fail",
                f"{target.host} does not resolve: {diagnosis.resolve_error}",
                "Check the host name, or add a Host entry with its HostName to your ssh config.",
            )
        ]
    elif diagnosis.port_open is False:
        return [
            Check("address", "ok", f"{target.host} is {', '.join(diagnosis.addresses)}"),
            Check(
                "port",
                "fail",
                f"nothing answers on {target.host}:{target.port}: {diagnosis.port_error}",
                "Check the port (--port, or Port in the ssh config) and that no firewall is in the way; "
                "a site reached through a bastion needs ProxyJump in the ssh config.",
            ),
        ]
    elif diagnosis.port_open:
        checks.append(Check("address", "ok", f"{target.host} is {', '.join(diagnosis.addresses)}"))
        checks.append(Check("port", "ok", f"{target.host}:{target.port} accepts connections"))
    known_hosts = settings.known_hosts or "~/.ssh/known_hosts"
    if diagnosis.host_key_known is False:
        checks.append(
            Check(
                "host key",
                "fail",
                f"the host key of {target.host}:{target.port} is not in {known_hosts} (or does not match it)",
                f"Check the key with your site's admins, then run: {keyscan_line(target, known_hosts)}",
            )
        )
        return checks
    if not settings.verify_host_key:
        checks.append(
            Check("host key", "warn", "not checked (--no-verify-host-key)", "Add the key with ssh-keyscan.")
        )
    elif diagnosis.host_key_known:
        checks.append(Check("host key", "ok", f"matches {known_hosts}"))
    if not diagnosis.logged_in:
        checks.append(
            Check(
                "login",
                "fail",
                diagnosis.login_error,
                "Check --user and --key-file (or IdentityFile in the ssh config, or keys in ssh-agent).",
            )
        )
        return checks
    seconds = f" in {diagnosis.connect_seconds:.2f} s" if diagnosis.connect_seconds is not None else ""
    checks.append(Check("login", "ok", f"as {target.user} by {diagnosis.auth_method}{seconds}"))
    checks.append(max_sessions_check(diagnosis.max_sessions))
    return checks


def max_sessions_check(channels: int | None, *, max_channels: int = 8) -> Check:
    """How many channels the server let one connection hold, against the session's ``max_channels``."""
    if channels is None:
        return Check("MaxSessions", "skip", "not probed")
    if channels == 0:
        return Check(
            "MaxSessions",
            "fail",
            "the server refused every command channel",
            "Ask the site's admins whether commands over SSH are allowed (MaxSessions in sshd_config).",
        )
    if channels <= max_channels:
        return Check(
            "MaxSessions",
            "warn",
            f"{channels} channels per connection",
            f"Open sessions with max_channels={max(1, channels - 2)} (the default 8 needs MaxSessions above 8).",
        )
    return Check("MaxSessions", "ok", f"{channels} channels per connection (sessions use {max_channels})")


async def environment_checks(settings: ConnectSettings, options: dict[str, Any]) -> list[Check]:
    """The login node as a session sees it: shell, start-up output, Python, Slurm, work directory."""
    workdir = options.get("remote_workdir", "~/slurmbatch")
    python = options.get("python", "python3")
    setup = slurm_setup_text(options.get("slurm_setup", ()))
    checks: list[Check] = []
    async with SSHPool(settings, max_connections=1, max_channels=2) as pool:
        shell = await pool.script('getent passwd "$(id -un)" | cut -d: -f7', what="reading the login shell")
        printed = pool.startup_output.strip()
        checks.append(Check("login shell", "ok", shell.stdout.strip() or "unknown"))
        if printed:
            checks.append(
                Check(
                    "start-up files",
                    "warn",
                    f"print {printed[:80]!r} for non-interactive commands",
                    "Sessions work around it, but SFTP breaks when the server starts sftp-server through "
                    "the shell: print only when the shell is interactive ([[ $- == *i* ]] in ~/.bashrc).",
                )
            )
        else:
            checks.append(Check("start-up files", "ok", "print nothing for non-interactive commands"))
        found = await pool.script(
            "\n".join(
                [setup.rstrip("\n") or ":", *(f"command -v {c} || echo missing {c}" for c in _SLURM_COMMANDS)]
            ),
            what="looking for Slurm's commands",
        )
        checks.append(slurm_commands_check(found.stdout, bool(setup)))
        result = await pool.script(
            _probe.probe_command(workdir, python=python, runner_name=_RUNNER_ABSENT, slurm_setup=setup),
            what="the session's probe",
        )
        try:
            facts = _probe.parse_probe(result.exit_status, result.stdout, result.stderr, workdir=workdir)
        except RemoteEnvironmentError as error:
            checks.append(Check("work directory", "fail", str(error)))
            return checks
        checks.append(python_check(facts.python_report, python))
        checks.extend(cluster_checks(facts.cluster_info, jobcomp=facts.config.get("JobCompType", "")))
        space = await pool.script(
            f"df -Pk {shlex.quote(facts.workdir)} | tail -n 1", what="reading free space"
        )
        checks.append(workdir_check(facts.workdir, space.stdout))
    return checks


def slurm_commands_check(found: str, had_setup: bool) -> Check:
    """Whether sbatch, squeue, sacct, scancel and scontrol are on PATH, from ``command -v`` lines. Pure."""
    missing = [line.split()[1] for line in found.splitlines() if line.startswith("missing ")]
    if not missing:
        return Check("Slurm commands", "ok", ", ".join(_SLURM_COMMANDS) + " on PATH")
    advice = (
        "Check the --slurm-setup lines: after them these are still not found."
        if had_setup
        else "Pass --slurm-setup (slurm_setup= in code) the lines that make them available, e.g. "
        "'module load slurm' or 'export PATH=$PATH:/opt/slurm/bin'."
    )
    return Check("Slurm commands", "fail", f"not on PATH for SSH commands: {', '.join(missing)}", advice)


def python_check(report: str, python: str) -> Check:
    """The remote Python and cloudpickle against this client's, with the session's own rule. Pure."""
    try:
        _probe.python_check(
            report, python=python, local_python=LOCAL_PYTHON, local_cloudpickle=LOCAL_CLOUDPICKLE
        )
    except RemoteEnvironmentError as error:
        return Check("remote Python", "fail", str(error))
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    remote = " with cloudpickle ".join(lines[-2:]) if len(lines) >= 2 else report.strip()
    return Check(
        "remote Python",
        "ok",
        f"{python} is Python {remote} (this client: Python {LOCAL_PYTHON}, cloudpickle {LOCAL_CLOUDPICKLE})",
    )


def cluster_checks(info: ClusterInfo, *, jobcomp: str = "") -> list[Check]:
    """Accounting, MaxArraySize and the Slurm release, as the session learns them. Pure.

    ``jobcomp`` is the controller's ``JobCompType``: without slurmdbd, sessions read the job completion
    records (``sacct -c``) for jobs squeue has forgotten, which needs ``jobcomp/filetxt``.
    """
    if info.accounting:
        accounting = Check("accounting", "ok", "slurmdbd keeps job records; sacct answers")
    elif jobcomp == "jobcomp/filetxt":
        accounting = Check(
            "accounting",
            "ok",
            "no slurmdbd, but job completion records (jobcomp/filetxt): jobs gone from squeue are found there",
        )
    else:
        accounting = Check(
            "accounting",
            "warn",
            "neither slurmdbd nor job completion records answer",
            f"Jobs that end without a result are learnt from squeue only, for MinJobAge ({info.min_job_age} s) "
            "after they end: keep the session open, or ask the site for accounting (slurmdbd).",
        )
    array = Check("MaxArraySize", "ok", f"{info.max_array_size} (larger maps are split into several arrays)")
    if not info.slurm_version:
        release = Check("Slurm version", "warn", "the controller did not say", "Run `scontrol show config`.")
    elif info.tested:
        release = Check("Slurm version", "ok", f"{info.slurm_version} (tested)")
    else:
        release = Check(
            "Slurm version",
            "warn",
            f"{info.slurm_version}, not one of the tested releases {' and '.join(TESTED_RELEASES)}",
            "It should work; report anything wrong with `scontrol show config` attached.",
        )
    return [accounting, array, release]


def workdir_check(workdir: str, df_line: str) -> Check:
    """The work directory exists and is private (the probe made it); its free space from ``df -Pk``."""
    fields = df_line.split()
    try:
        free = int(fields[3]) * 1024
    except (IndexError, ValueError):
        return Check("work directory", "ok", f"{workdir} is writable (free space unknown)")
    detail = f"{workdir} is writable, {free / 2**30:.1f} GiB free"
    if free < 2**28:
        return Check("work directory", "warn", detail, "Under 256 MiB free: results may not fit.")
    return Check("work directory", "ok", detail)


async def job_check(host: str, options: dict[str, Any]) -> Check:
    """Submit one tiny job through a real session and time it from submission to its result."""
    spec = JobSpec(options={"time": "00:02:00"})
    try:
        with anyio.fail_after(JOB_DEADLINE):
            async with SlurmSession(host, journal=False, max_connections=1, **options) as session:
                started = time.monotonic()
                future = await session.submit(socket.gethostname, (), spec)
                node = await future
                seconds = time.monotonic() - started
    except TimeoutError:
        return Check(
            "test job",
            "fail",
            f"no result within {JOB_DEADLINE:g} s",
            "Check with squeue whether jobs start (a full queue, a partition that is down).",
        )
    except SlurmBatchError as error:
        return Check("test job", "fail", f"{type(error).__name__}: {error}")
    return Check(
        "test job",
        "ok",
        f"job {future.job_id} ran on {node}, result back {seconds:.2f} s after submission "
        "(the work directory is visible from the compute node)",
    )


def failed(checks: Sequence[Check]) -> bool:
    """Whether a session would not work: any check failed."""
    return any(check.verdict == "fail" for check in checks)
