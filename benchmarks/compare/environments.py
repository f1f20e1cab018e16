"""The environments the contenders run in, made once and kept in the cluster's state directory.

- submitit: a venv of the cluster's system Python (the login node's) with submitit 1.5, readable by
  the job user; its jobs run the same interpreter.
- covalent-slurm-plugin: a client venv of this interpreter with covalent 0.240 and the plugin 0.18 (it
  registers the same executor name as slurmbatch_covalent, so it needs its own environment), plus its
  job side (covalent and cloudpickle at the client's versions, and a no-op ``conda``), as
  :func:`benchmarks.covalent_workflow.csp_job_side` makes it (its home, whose ``~/.ssh/config`` gives
  the port, is the endpoint's: see :mod:`benchmarks.compare.endpoints`).
- covalent, whichever runs it, keeps every file in a scratch directory.

On a Slurm release other than the host's, the login node and the jobs are that release's Debian root:
the system-Python venvs are made inside it (see :mod:`benchmarks.job_venvs`). An environment that cannot
be made there (a package that does not install on that Python) leaves its contenders out of the run,
each with the reason, which the report shows in their row.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import attrs

from benchmarks.covalent_workflow import covalent_env, csp_job_side, free_port
from benchmarks.job_venvs import VenvUnavailable, inside, make_venv
from slurmbatch.testing import ClusterSettings

SUBMITIT = "submitit==1.5.4"
CSP = ("covalent==0.240.0", "covalent-slurm-plugin==0.18.0", "fastapi<0.132")
DRIVERS = Path(__file__).parent / "drivers"
SUBMITIT_CONTENDERS = ("submitit-submit", "submitit-batch")


@attrs.frozen
class Environments:
    """Where each contender's interpreter and files are; ``unavailable`` maps the key of a contender
    that cannot run on this cluster to the reason (its environment is None then)."""

    bench_dir: Path
    drivers: Path  # a copy of the drivers the job user can read
    submitit_python: Path | None
    csp_python: Path | None
    csp_bashrc: Path | None
    scratch: Path
    unavailable: dict[str, str]


def job_python_minor(cluster: ClusterSettings) -> str:
    """The Python minor version the cluster's jobs run (``3.11``, ``3.13``)."""
    argv = inside(
        cluster.root_dir(), [cluster.python, "-c", "import sys; print(*sys.version_info[:2], sep='.')"]
    )
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def prepare(cluster: ClusterSettings, scratch: Path, release: str) -> Environments:
    root = cluster.root_dir()
    bench_dir = Path(cluster.state_dir) / "compare-bench"
    bench_dir.mkdir(mode=0o755, exist_ok=True)
    bench_dir.chmod(0o755)
    drivers = bench_dir / "drivers"
    shutil.rmtree(drivers, ignore_errors=True)
    shutil.copytree(DRIVERS, drivers, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [drivers, *drivers.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    unavailable: dict[str, str] = {}

    def lacking(keys: tuple[str, ...], reason: str) -> None:
        print(f"not available on Slurm {release}: {', '.join(keys)}: {reason}", flush=True)
        for key in keys:
            unavailable[key] = f"not available on {release}: {reason}"

    submitit_python: Path | None = None
    try:
        submitit_python = make_venv(
            bench_dir / "submitit-venv",
            (SUBMITIT,),
            "import submitit; assert submitit.__version__.startswith('1.5')",
            root=root,
        )
    except VenvUnavailable as exc:
        lacking(SUBMITIT_CONTENDERS, str(exc))
    csp_python: Path | None = None
    csp_bashrc: Path | None = None
    try:
        csp_python = make_venv(
            bench_dir / "csp-venv",
            CSP,
            "import importlib.metadata as m; assert m.version('covalent-slurm-plugin') == '0.18.0'",
            base=sys.executable,
        )
        csp_bashrc = csp_job_side(csp_python, bench_dir, scratch, root=root)
    except VenvUnavailable as exc:
        csp_python = None
        lacking(("csp",), str(exc))
    if importlib.util.find_spec("covalent") is None:
        lacking(
            ("slurmbatch-covalent",),
            f"covalent is not installed for this Python {sys.version_info.major}.{sys.version_info.minor}: "
            "install slurmbatch[covalent]",
        )
    return Environments(bench_dir, drivers, submitit_python, csp_python, csp_bashrc, scratch, unavailable)


def login_node(cluster: ClusterSettings, argv: list[str]) -> list[str]:
    """``argv`` run as the job user on the login node (this machine, or the cluster's root), without SSH."""
    env = [f"HOME=/home/{cluster.user}", "PATH=/usr/bin:/bin", f"SLURM_CONF={cluster.slurm_conf}"]
    root = cluster.root_dir()
    if root is None:
        return ["runuser", "-u", cluster.user, "--", "env", "-i", *env, *argv]
    # The root knows the job user by the host's ids (the local cluster adds it so).
    user = pwd.getpwnam(cluster.user)
    as_user = f"--userspec={user.pw_uid}:{user.pw_gid}"
    return ["/usr/sbin/chroot", as_user, str(root), "env", "-i", *env, *argv]


def isolated_covalent(root: Path, home: Path | None = None) -> dict[str, str]:
    """The environment of a process that imports covalent: every covalent file under ``root``."""
    env = dict(os.environ, **covalent_env(root, free_port(), home=home))
    env.pop("PYTHONPATH", None)
    return env
