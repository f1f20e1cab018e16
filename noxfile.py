"""Sessions: tests, unit (3.10-3.13), lint, typecheck, docs, demo, bench, cluster (``nox -s cluster -- up|down|status``)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PACKAGES = ["slurmbatch", "slurmbatch_covalent"]


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-e", f".[{extras}]")


# What runs against Slurm 24.11 as well: the SDK's core (submit, exceptions, maps and arrays, cancel, end
# states, purged jobs through sacct, the watcher, connection drops and slurmctld restarts, reattach, what
# the session learns of the release), login nodes as sites run them (login users of other shells, noisy
# start-up files, external or no SFTP, jump hosts), chains of jobs, the command line and Covalent's
# workflows. Everything else (the multi-factor login node, retries and preemption among them) runs
# against 22.05, the host's own release.
RELEASE_TIER = [
    "tests/unit",
    "tests/integration/test_session.py",
    "tests/integration/test_job_states.py",
    "tests/integration/test_watcher.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_throughput.py",
    "tests/integration/test_reattach.py",
    "tests/integration/test_dependencies.py",
    "tests/integration/test_cluster_info.py",
    "tests/integration/test_login_shells.py",
    "tests/integration/test_login_nodes.py",
    "tests/integration/test_jump_hosts.py",
    "tests/integration/test_job_environment.py",
    "tests/integration/test_cli.py",
    "tests/covalent/test_workflows.py",
]


def _python(minor: str) -> str:
    """An interpreter of Python ``minor``: on PATH, or one of pyenv's (these machines have them there)."""
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"))
    return str(pyenv[-1]) if pyenv else minor


def _pytest(session: nox.Session, report: Path, *args: str) -> None:
    session.run("pytest", f"--junitxml={report}", "--durations=15", *args, env={"PYTHONUNBUFFERED": "1"})
    # pytest exits non-zero when it collects nothing, but a run that only skipped is no success either.
    suite = ET.parse(report).getroot()
    totals = suite if suite.tag == "testsuite" else suite[0]
    ran = int(totals.get("tests", 0)) - int(totals.get("skipped", 0))
    if ran <= 0:
        session.error("No test ran: that is not a passing suite.")
    session.log(f"{ran} tests ran.")


@nox.session(python=_python("3.11"))
def tests(session: nox.Session) -> None:
    """Unit tests and integration tests against a local Slurm 22.05 cluster (needs root), on Python 3.11."""
    _install(session, "dev,covalent")
    _pytest(session, ROOT / ".nox" / "junit.xml", *session.posargs)


@nox.session(name="tests-24.11", python=_python("3.13"))
def tests_slurm_24_11(session: nox.Session) -> None:
    """The core of the suite against a local Slurm 24.11 cluster (OpenSSH 10.0), on Python 3.13: the jobs
    run that root's Python 3.13, and pickles need the client's minor version."""
    _install(session, "dev,covalent")
    _pytest(
        session, ROOT / ".nox" / "junit-24.11.xml", "--slurm", "24.11", *(session.posargs or RELEASE_TIER)
    )


#: The Python versions the package claims (requires-python and the classifiers say the same).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# So that nox finds python3.10 ... by name, and names the sessions unit-3.10 ...: pyenv's pythons first.
_PYENV_BINS = [str(Path(_python(minor)).parent) for minor in PYTHONS if "/" in _python(minor)]
os.environ["PATH"] = os.pathsep.join([*dict.fromkeys(_PYENV_BINS), os.environ.get("PATH", "")])


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """The unit suite (no cluster) on every Python the package claims: ``nox -s unit`` (or ``unit-3.12``)."""
    session.install("-e", ".[dev]")
    _pytest(session, ROOT / ".nox" / f"junit-unit-{session.python}.xml", "tests/unit", "-q", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``--strict`` (broken links and missing references fail)."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(ROOT / ".nox" / "site"),
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # the theme's notice about its successor, printed on every build
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict, on the packages."""
    _install(session, "dev,covalent")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Start the local cluster and run the demo through the SDK."""
    _install(session, "dev")
    session.run("python", "-m", "slurmbatch.testing", "up")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Every contender side by side (``-- --full`` for the long run, ``-- --rtt 0,50`` for added RTT).

    ``python -m benchmarks`` (core submit), ``python -m benchmarks.throughput`` and
    ``python -m benchmarks.latency`` are selections of the same harness; ``python -m
    benchmarks.covalent_workflow`` runs a workflow through two real Covalent servers.
    """
    _install(session, "dev,covalent,bench")
    session.run("python", "-m", "benchmarks.compare", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """``nox -s cluster -- up|down|status [options]``: the local Slurm cluster."""
    _install(session, "dev")
    args = session.posargs or ["status"]
    session.run("python", "-m", "slurmbatch.testing", *args)
