"""The environments the contenders run in, made once and kept in the cluster's state directory.

- submitit: a venv of the cluster's system Python (the login node's) with submitit 1.5, readable by
  the job user; its jobs run the same interpreter.
- covalent-slurm-plugin: a client venv of this interpreter with covalent 0.240 and the plugin 0.18 (it
  registers the same executor name as slurmbatch_covalent, so it needs its own environment), plus its
  job side (covalent and cloudpickle at the client's versions, and a no-op ``conda``), as
  :func:`benchmarks.covalent_workflow.csp_job_side` makes it (its home, whose ``~/.ssh/config`` gives
  the port, is the endpoint's: see :mod:`benchmarks.compare.endpoints`).
- covalent, whichever runs it, keeps every file in a scratch directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import attrs

from benchmarks.covalent_workflow import covalent_env, csp_job_side, free_port
from slurmbatch.testing import ClusterSettings

SUBMITIT = "submitit==1.5.4"
CSP = ("covalent==0.240.0", "covalent-slurm-plugin==0.18.0", "fastapi<0.132")
DRIVERS = Path(__file__).parent / "drivers"


@attrs.frozen
class Environments:
    """Where each contender's interpreter and files are."""

    bench_dir: Path
    drivers: Path  # a copy of the drivers the job user can read
    submitit_python: Path
    csp_python: Path
    csp_bashrc: Path
    scratch: Path


def _venv(path: Path, base: str, packages: tuple[str, ...], check: str) -> Path:
    python = path / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        return python
    print(f"installing {' '.join(packages)} into {path} (once)...", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "--quiet", *packages], check=True, stderr=subprocess.DEVNULL
    )
    return python


def prepare(cluster: ClusterSettings, scratch: Path) -> Environments:
    bench_dir = Path(cluster.state_dir) / "compare-bench"
    bench_dir.mkdir(mode=0o755, exist_ok=True)
    bench_dir.chmod(0o755)
    drivers = bench_dir / "drivers"
    shutil.rmtree(drivers, ignore_errors=True)
    shutil.copytree(DRIVERS, drivers, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [drivers, *drivers.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    submitit_python = _venv(
        bench_dir / "submitit-venv",
        "/usr/bin/python3",
        (SUBMITIT,),
        "import submitit; assert submitit.__version__.startswith('1.5')",
    )
    csp_python = _venv(
        bench_dir / "csp-venv",
        sys.executable,
        CSP,
        "import importlib.metadata as m; assert m.version('covalent-slurm-plugin') == '0.18.0'",
    )
    csp_bashrc = csp_job_side(csp_python, bench_dir, scratch)
    return Environments(bench_dir, drivers, submitit_python, csp_python, csp_bashrc, scratch)


def login_node(cluster: ClusterSettings, argv: list[str]) -> list[str]:
    """``argv`` run as the job user on the login node (this machine), without SSH."""
    env = [f"HOME=/home/{cluster.user}", "PATH=/usr/bin:/bin", f"SLURM_CONF={cluster.slurm_conf}"]
    return ["runuser", "-u", cluster.user, "--", "env", "-i", *env, *argv]


def isolated_covalent(root: Path, home: Path | None = None) -> dict[str, str]:
    """The environment of a process that imports covalent: every covalent file under ``root``."""
    env = dict(os.environ, **covalent_env(root, free_port(), home=home))
    env.pop("PYTHONPATH", None)
    return env
