"""pytest plugin: the local cluster as session-scoped fixtures.

``slurm_cluster`` yields :class:`ClusterSettings` of a cluster without accounting, ``slurm_cluster_dbd``
one with slurmdbd (so ``sacct`` works), and ``local_cluster`` the :class:`LocalCluster` behind
``slurm_cluster`` (to start another sshd, add login users or jump hosts, or restart a daemon). A cluster
the fixture started is stopped at the end of the run; one that was already running is reused and left
running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from ._configs import ClusterOptions
from .cluster import ClusterSettings, LocalCluster

# A short MinJobAge: squeue forgets finished jobs after 10 s, so tests exercise the sacct fallback. The
# Slurm release is the one `--slurm` chose (pytest_configure sets it before test modules are imported).
TEST_OPTIONS = ClusterOptions(min_job_age=10)
TEST_STATE_ROOT = Path(os.environ.get("SLURMBATCH_TEST_CLUSTER_ROOT", "/var/lib/slurmbatch"))


def state_dir_for(name: str) -> Path:
    """Where the test cluster ``name`` of the chosen Slurm release keeps its files."""
    suffix = "" if TEST_OPTIONS.slurm == "22.05" else f"-{TEST_OPTIONS.slurm}"
    return TEST_STATE_ROOT / f"{name}{suffix}"


def extra_cluster(name: str, **options: Any) -> LocalCluster:
    """A test cluster of its own (e.g. one node that enforces memory), of the chosen Slurm release."""
    return LocalCluster(state_dir_for(name), ClusterOptions(slurm=TEST_OPTIONS.slurm, **options))


def _cluster_up(request: pytest.FixtureRequest, name: str, options: ClusterOptions) -> Iterator[LocalCluster]:
    if os.geteuid() != 0:
        pytest.fail(
            "Integration tests start a local Slurm cluster and need root (slurmd runs jobs as another user). "
            "Run them as root, e.g. `sudo bash dev test`.",
            pytrace=False,
        )
    cluster = LocalCluster(state_dir_for(name), options)
    was_running = cluster.status().get("healthy", False)
    cluster.up()
    yield cluster
    if not was_running and not request.config.getoption("--keep-cluster"):
        cluster.down()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--keep-cluster", action="store_true", help="leave the local test clusters running after the run"
    )
    parser.addoption(
        "--slurm",
        choices=["22.05", "24.11"],
        default=os.environ.get("SLURMBATCH_TEST_SLURM", "22.05"),
        help="the Slurm release of the local test clusters (default 22.05, the host's own)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global TEST_OPTIONS
    TEST_OPTIONS = attrs.evolve(TEST_OPTIONS, slurm=config.getoption("--slurm"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"slurmbatch test clusters: Slurm {TEST_OPTIONS.slurm}, state under {TEST_STATE_ROOT}"


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """The local cluster (no accounting) as a :class:`LocalCluster`, started on first use."""
    yield from _cluster_up(request, "test-cluster", TEST_OPTIONS)


@pytest.fixture(scope="session")
def slurm_cluster(local_cluster: LocalCluster) -> ClusterSettings:
    """How to reach the local cluster without accounting: host, port, user, key_file, known_hosts, ..."""
    return local_cluster.settings()


@pytest.fixture(scope="session")
def local_cluster_dbd(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A second local cluster, with slurmdbd and MariaDB, so that ``sacct`` has durable records."""
    yield from _cluster_up(request, "test-cluster-dbd", attrs.evolve(TEST_OPTIONS, slurmdbd=True))


@pytest.fixture(scope="session")
def slurm_cluster_dbd(local_cluster_dbd: LocalCluster) -> ClusterSettings:
    """How to reach the local cluster with slurmdbd accounting."""
    return local_cluster_dbd.settings()
