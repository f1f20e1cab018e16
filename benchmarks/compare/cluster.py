"""The benchmark's own local cluster, and the scheduler commands the harness runs there itself.

The harness runs them as root on this machine (the login node), not over SSH, so they never show up
in the sshd log it counts; their RPCs come from root, not from the job user whose RPCs it counts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import attrs

from slurmbatch.testing import ClusterOptions, ClusterSettings, LocalCluster

# Its own state directory: starting, reusing or stopping it never touches another cluster.
DEFAULT_STATE_DIR = (
    Path(os.environ.get("SLURMBATCH_TEST_CLUSTER_ROOT", "/var/lib/slurmbatch/bench")) / "compare"
)
OPTIONS = ClusterOptions()  # 2 nodes advertising 16 CPUs each, sshd MaxSessions 10, MaxStartups 10:30:100
HOST_RELEASE = OPTIONS.slurm
WORKDIR_PREFIX = "compare-"


def options(slurm: str) -> ClusterOptions:
    """The benchmark cluster's options for Slurm release ``slurm``: the same cluster otherwise."""
    return attrs.evolve(OPTIONS, slurm=slurm)


def state_dir_for(slurm: str) -> Path:
    """The benchmark cluster of each release has its own state directory, so both can run at once."""
    return DEFAULT_STATE_DIR if slurm == HOST_RELEASE else DEFAULT_STATE_DIR.with_name(f"compare-{slurm}")


def start(state_dir: Path, slurm: str = HOST_RELEASE) -> ClusterSettings:
    return LocalCluster(state_dir, options(slurm)).up()


def slurm(cluster: ClusterSettings, *argv: str, timeout: float = 60) -> str:
    """Run a Slurm command against this cluster; its standard output."""
    env = dict(os.environ, SLURM_CONF=cluster.slurm_conf)
    done = subprocess.run(
        cluster.admin_argv(list(argv)), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout


def drain(cluster: ClusterSettings, timeout: float = 90) -> bool:
    """Cancel every job of the job user and wait until the queue has none: the next run starts idle."""
    slurm(cluster, "scancel", "--user", cluster.user)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm(cluster, "squeue", "-h", "--user", cluster.user, "-o", "%i").strip():
            return True
        time.sleep(0.25)
    return False


def _prefix(cluster: ClusterSettings) -> str:
    # The home directory is shared by the benchmark clusters of both releases: each cleans only its own
    # (the host release's "compare-*" does not match another's "compare@<cluster>-*").
    return WORKDIR_PREFIX if cluster.root_dir() is None else f"compare@{cluster.cluster_name}-"


def workdir(cluster: ClusterSettings, name: str) -> str:
    return f"/home/{cluster.user}/{_prefix(cluster)}{name}"


def remove_workdirs(cluster: ClusterSettings) -> None:
    """Remove what the contenders left in the job user's home (same machine, so no SSH)."""
    home = Path(f"/home/{cluster.user}")
    for path in home.glob(f"{_prefix(cluster)}*"):
        shutil.rmtree(path, ignore_errors=True)
    # covalent's config directories of csp's jobs, in /tmp of the login node (or of the cluster's root).
    root = cluster.root_dir()
    for path in (Path("/tmp") if root is None else root / "tmp").glob("compare-csp-*"):
        shutil.rmtree(path, ignore_errors=True)
