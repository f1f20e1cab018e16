"""Sessions: tests, lint, typecheck, demo, bench, cluster (``nox -s cluster -- up|down|status``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PACKAGES = ["slurmbatch", "slurmbatch_covalent"]


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: unit tests and integration tests against the local cluster (needs root)."""
    _install(session, "dev,covalent")
    report = ROOT / ".nox" / "junit.xml"
    session.run("pytest", f"--junitxml={report}", *session.posargs, env={"PYTHONUNBUFFERED": "1"})
    # pytest exits non-zero when it collects nothing, but a run that only skipped is no success either.
    suite = ET.parse(report).getroot()
    totals = suite if suite.tag == "testsuite" else suite[0]
    ran = int(totals.get("tests", 0)) - int(totals.get("skipped", 0))
    if ran <= 0:
        session.error("No test ran: that is not a passing suite.")
    session.log(f"{ran} tests ran.")


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
    """Submission throughput side by side with the alternatives (``-- --full`` for the long run).

    The single-purpose scripts stay runnable on their own: ``python -m benchmarks`` (core submit),
    ``python -m benchmarks.throughput``, ``python -m benchmarks.latency``, ``python -m benchmarks.covalent_workflow``.
    """
    _install(session, "dev,covalent")
    session.run("python", "-m", "benchmarks.compare", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """``nox -s cluster -- up|down|status [options]``: the local Slurm cluster."""
    _install(session, "dev")
    args = session.posargs or ["status"]
    session.run("python", "-m", "slurmbatch.testing", *args)
