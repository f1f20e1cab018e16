"""A real Covalent server for the slurmbatch_covalent tests, isolated in a temporary directory.

Covalent takes its directories from the environment when it is first imported, and writes into $HOME
otherwise; so the environment is set here, at import time, before any test module imports covalent. The
server (``covalent start --no-cluster``) runs from this interpreter's environment, where slurmbatch is
installed, so it loads the ``slurm`` executor from slurmbatch_covalent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from slurmbatch.testing import ClusterSettings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


COVALENT_ROOT = Path(tempfile.mkdtemp(prefix="slurmbatch-covalent-"))
COVALENT_PORT = _free_port()
_ISOLATION = {
    "COVALENT_CONFIG_DIR": "config",
    "COVALENT_EXECUTOR_DIR": "executors",
    "COVALENT_CACHE_DIR": "cache",
    "COVALENT_DISPATCH_CACHE_DIR": "dispatch-cache",
    "COVALENT_RESULTS_DIR": "results",
    "COVALENT_LOGDIR": "logs",
    "COVALENT_DATA_DIR": "data",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_DIR": "xdg-config",
    "XDG_DATA_HOME": "xdg-data",
}
os.environ.update({name: str(COVALENT_ROOT / sub) for name, sub in _ISOLATION.items()})
os.environ["COVALENT_DATABASE"] = str(COVALENT_ROOT / "dispatcher.sqlite")
os.environ["COVALENT_SVC_PORT"] = str(COVALENT_PORT)
os.environ["COVALENT_DISABLE_DASK"] = "1"
# `covalent start` writes its pid file here without creating the directory first.
(COVALENT_ROOT / "cache").mkdir()

START_TIMEOUT = 90.0  # `covalent start` retries forever when the server never comes up
STOP_TIMEOUT = 15.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "covalent: runs Covalent workflows through slurmbatch_covalent (needs covalent installed)"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(COVALENT_ROOT, ignore_errors=True)


@attrs.frozen
class CovalentServer:
    """A running ``covalent start --no-cluster`` server, and the ``[executors.slurm]`` section it read."""

    port: int
    root: Path
    slurm_section: dict[str, Any]
    log: Path


def seed_section(cluster: ClusterSettings, workdir: str) -> dict[str, Any]:
    """The seed's ``[executors.slurm]`` example, adapted to the local cluster.

    The seed asks for ``constraint = "gpu"`` and ``gpus = 4`` (sbatch) and ``gpus = 4`` (srun): the local
    nodes have no features and no GPUs, and sbatch refuses both there, so they are left out. Its
    ``ntasks = 4`` x ``cpus-per-task = 8`` is scaled to 2 x 1 so that 20 jobs share two simulated nodes on
    a 2-core machine. ``qos``, ``cpu_bind`` and ``gpu-bind`` stay: the local Slurm accepts them.
    """
    return {
        "username": cluster.user,
        "address": cluster.host,
        "ssh_key_file": cluster.key_file,
        "remote_workdir": workdir,
        "cache_dir": str(COVALENT_ROOT / "slurm-cache"),
        # New parameters: the local sshd's port and host key, no ~/.ssh/config, and the job side's Python.
        "port": cluster.port,
        "known_hosts": cluster.known_hosts,
        "ssh_config": [],
        "python": cluster.python,
        "max_connections": 2,
        "options": {"nodes": 1, "ntasks": 2, "cpus-per-task": 1, "qos": "regular"},
        "srun_options": {"cpu_bind": "cores", "gpu-bind": "single:1"},
    }


def _write_slurm_section(section: dict[str, Any]) -> None:
    import toml  # covalent's own TOML library, installed with it

    config_file = Path(os.environ["COVALENT_CONFIG_DIR"]) / "covalent.conf"
    config = toml.loads(config_file.read_text()) if config_file.exists() else {}
    config.setdefault("executors", {})["slurm"] = section
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(toml.dumps(config))


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}", timeout=2):
            return True
    except OSError:
        return False


def _server_pids() -> list[int]:
    import psutil  # a dependency of covalent

    pid_file = COVALENT_ROOT / "cache" / "ui.pid"
    try:
        shell = psutil.Process(int(pid_file.read_text()))
    except (OSError, ValueError, psutil.NoSuchProcess):
        return []
    return [shell.pid, *(child.pid for child in shell.children(recursive=True))]


def _stop_server() -> None:
    """Stop what `covalent start` started, as `covalent stop` does (SIGINT to uvicorn), but bounded."""
    import psutil

    processes = []
    for pid in _server_pids():
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for process in processes[1:]:
        process.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=5)
    (COVALENT_ROOT / "cache" / "ui.pid").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def covalent_server(slurm_cluster: ClusterSettings) -> Iterator[CovalentServer]:
    """A Covalent server whose ``[executors.slurm]`` section is the seed's, pointed at the local cluster."""
    pytest.importorskip("covalent")
    workdir = f"/home/{slurm_cluster.user}/covalent-{COVALENT_ROOT.name}"
    section = seed_section(slurm_cluster, workdir)
    _write_slurm_section(section)
    covalent = Path(sys.executable).with_name("covalent")
    log = COVALENT_ROOT / "logs" / "covalent_ui.log"
    try:
        started = subprocess.run(
            [str(covalent), "start", "--no-cluster", "--port", str(COVALENT_PORT)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _stop_server()
        pytest.fail(f"covalent start did not bring the server up in {START_TIMEOUT:.0f} s; see {log}")
    if started.returncode != 0 or not _answers(COVALENT_PORT):
        _stop_server()
        pytest.fail(f"covalent start failed on port {COVALENT_PORT}:\n{started.stdout}\n{started.stderr}")
    try:
        yield CovalentServer(port=COVALENT_PORT, root=COVALENT_ROOT, slurm_section=section, log=log)
    finally:
        _stop_server()
        login_shell(slurm_cluster, f"rm -rf {workdir}")


def wait_for_status(dispatch_id: str, statuses: set[str], timeout: float) -> str:
    """Poll the server until the dispatch reaches one of ``statuses``; return it (``get_result(wait=True)``
    would wait forever)."""
    import covalent as ct

    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(ct.get_result(dispatch_id, status_only=True)["status"])
        if status in statuses:
            return status
        time.sleep(0.25)
    raise AssertionError(f"dispatch {dispatch_id} is still {status or 'unknown'} after {timeout:.0f} s")


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def login_shell(cluster: ClusterSettings, command: str) -> str:
    """Run ``command`` on the cluster's login node as the job user, through the system ssh client."""
    done = subprocess.run(
        ["ssh", "-F", cluster.ssh_config, cluster.ssh_alias, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout
