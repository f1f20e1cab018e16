"""A 20-electron Covalent workflow through slurmbatch_covalent and through covalent-slurm-plugin 0.18, in one run.

``python -m benchmarks.covalent_workflow [--electrons N] [--rounds R] [--csp-venv DIR] [--state-dir DIR]``

Both executors run the same lattice (``executor="slurm"``, the seed's ``[executors.slurm]`` section
adapted to the local cluster) from two real ``covalent start --no-cluster`` servers, each isolated in a
temporary directory: this interpreter's environment for slurmbatch_covalent, and ``--csp-venv`` (covalent
0.240 and covalent-slurm-plugin 0.18; the two register the same executor name, so they need separate
environments). Measured per run: wall time from dispatch to the dispatch's end state, the SSH connections
the cluster's sshd accepted meanwhile, failed electrons, and slurmctld's job-info RPCs.

covalent-slurm-plugin needs more on the cluster side, and gets it here without changes to the plugin: the
job side's Python with covalent and cloudpickle at the server's versions (a venv under the cluster's
state directory), a ``conda`` command (its scripts always run ``conda activate``: a no-op function in the
file given as ``bashrc_path``), and the sshd port from the client's ``~/.ssh/config`` (it passes no port):
its server runs with ``HOME`` pointing at a temporary home with that config.
"""

from __future__ import annotations

import argparse
import json
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
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.job_venvs import make_venv
from slurmbatch.testing import DEFAULT_STATE_DIR, ClusterSettings, LocalCluster
from slurmbatch.testing.logins import SshdLogMark

RESULTS = Path(__file__).parent / "results"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
START_TIMEOUT = 120.0
# Options of the seed's [executors.slurm] example that the local cluster accepts (it has no GPUs and no
# node features), scaled from 4 tasks x 8 CPUs to 2 x 1 for two simulated nodes on a small machine.
OPTIONS = {"nodes": 1, "ntasks": 2, "cpus-per-task": 1, "qos": "regular"}
SRUN_OPTIONS = {"cpu_bind": "cores", "gpu-bind": "single:1"}


def login(cluster: ClusterSettings, command: str) -> str:
    done = subprocess.run(
        ["ssh", "-F", cluster.ssh_config, cluster.ssh_alias, command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def job_info_rpcs(cluster: ClusterSettings) -> int:
    """slurmctld's job-info RPCs so far (``sdiag``): what status polling costs the scheduler."""
    count = 0
    for line in login(cluster, "sdiag").splitlines():
        if line.strip().startswith(("REQUEST_JOB_INFO ", "REQUEST_JOB_INFO_SINGLE ")):
            count += int(line.split("count:")[1].split()[0])
    return count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def covalent_env(root: Path, port: int, home: Path | None = None) -> dict[str, str]:
    """An environment in which covalent keeps every file under ``root`` and serves on ``port``."""
    dirs = {
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
    env = {name: str(root / sub) for name, sub in dirs.items()}
    env |= {
        "COVALENT_DATABASE": str(root / "dispatcher.sqlite"),
        "COVALENT_SVC_PORT": str(port),
        "COVALENT_DISABLE_DASK": "1",
    }
    if home is not None:
        env["HOME"] = str(home)
    (root / "cache").mkdir(parents=True, exist_ok=True)  # `covalent start` writes its pid file there
    return env


def write_slurm_section(root: Path, section: dict[str, Any]) -> None:
    import toml  # installed with covalent

    config_file = root / "config" / "covalent.conf"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(toml.dumps({"executors": {"slurm": section}}))


@contextmanager
def covalent_server(bin_dir: Path, root: Path, port: int, env: dict[str, str]) -> Iterator[str]:
    """Run ``covalent start --no-cluster`` from ``bin_dir``; yield its address; stop it at the end."""
    full_env = dict(os.environ, **env)
    full_env.pop("PYTHONPATH", None)
    try:
        started = subprocess.run(
            [str(bin_dir / "covalent"), "start", "--no-cluster", "--port", str(port)],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=START_TIMEOUT,
            check=False,
        )
        address = f"http://localhost:{port}"
        if started.returncode != 0 or not answers(address):
            raise RuntimeError(f"covalent start ({bin_dir}) failed:\n{started.stdout}\n{started.stderr}")
        yield address
    finally:
        stop_server(root)


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(address, timeout=2):
            return True
    except OSError:
        return False


def stop_server(root: Path) -> None:
    """Stop what ``covalent start`` started (SIGINT to uvicorn, as ``covalent stop`` does), bounded."""
    import psutil

    pid_file = root / "cache" / "ui.pid"
    try:
        shell = psutil.Process(int(pid_file.read_text()))
        processes = [shell, *shell.children(recursive=True)]
    except (OSError, ValueError, psutil.NoSuchProcess):
        return
    for process in processes[1:]:
        try:
            process.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=15)
    for process in alive:
        process.kill()
    pid_file.unlink(missing_ok=True)


def csp_job_side(csp_python: Path, bench_dir: Path, scratch: Path, *, root: Path | None = None) -> Path:
    """What covalent-slurm-plugin needs on the job side; return the file to pass as ``bashrc_path``.

    A venv of the cluster's system Python (in ``root``, the cluster's Debian root, for a Slurm release
    other than the host's) with covalent and cloudpickle at the server's versions (kept between runs),
    activated by a bashrc file that also defines a no-op ``conda``. Raises
    :class:`~benchmarks.job_venvs.VenvUnavailable` when covalent does not install there.
    """
    # Importing covalent writes its config: keep that in the scratch directory, not in $HOME.
    env = dict(os.environ, **covalent_env(scratch / "probe", free_port(), home=scratch / "probe"))
    versions = subprocess.run(
        [
            str(csp_python),
            "-c",
            "import covalent, cloudpickle; print(covalent.__version__, cloudpickle.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    covalent_version, cloudpickle_version = versions
    venv = bench_dir / "csp-job-venv"
    check = (
        "import covalent, cloudpickle; "
        f"assert (covalent.__version__, cloudpickle.__version__) == {tuple(versions)!r}"
    )
    make_venv(
        venv,
        [f"covalent=={covalent_version}", f"cloudpickle=={cloudpickle_version}"],
        check,
        root=root,
        env=env,
    )
    bashrc = bench_dir / "csp-bashrc"
    bashrc.write_text(
        "# The job side of covalent-slurm-plugin on the local cluster.\n"
        "conda() { :; }  # its scripts always run `conda activate`; there is no conda here\n"
        f"source {venv}/bin/activate\n"
    )
    bench_dir.chmod(0o755)
    bashrc.chmod(0o644)
    return bashrc


def run_workflow(address: str, electrons: int, cluster: ClusterSettings, timeout: float) -> dict[str, Any]:
    import cloudpickle
    import covalent as ct

    # Neither server nor job can import this module: its functions travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    @ct.electron(executor="slurm")
    def square_electron(x: int) -> int:
        return x * x

    @ct.lattice
    def fan_out(n: int) -> list[int]:
        return [square_electron(i) for i in range(n)]

    rpcs_before = job_info_rpcs(cluster)
    mark = SshdLogMark.now(cluster.sshd_log)
    started = time.perf_counter()
    dispatch_id = ct.dispatch(fan_out, dispatcher_addr=address)(electrons)
    status = ""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        status = str(ct.get_result(dispatch_id, dispatcher_addr=address, status_only=True)["status"])
        if status in TERMINAL:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - started
    logins = mark.logins()
    refused = mark.refused_sessions()
    rpcs = job_info_rpcs(cluster) - rpcs_before
    result = ct.get_result(dispatch_id, dispatcher_addr=address)
    graph = result.lattice.transport_graph
    nodes = [n for n in graph._graph.nodes if graph.get_node_value(n, "name") == "square_electron"]
    failed = [n for n in nodes if str(graph.get_node_value(n, "status")) != "COMPLETED"]
    errors = [str(graph.get_node_value(n, "error"))[:300] for n in failed]
    correct = status == "COMPLETED" and result.result == [i * i for i in range(electrons)]
    return {
        "status": status,
        "correct_result": correct,
        "wall_seconds": round(wall, 2),
        "ssh_connections": logins,
        "sessions_refused_by_sshd": refused,
        "failed_electrons": len(failed),
        "first_errors": errors[:3],
        "job_info_rpcs": rpcs,
    }


def section(cluster: ClusterSettings, **extra: Any) -> dict[str, Any]:
    """The seed's [executors.slurm] section, adapted to the local cluster, plus executor-specific keys."""
    return {
        "username": cluster.user,
        "address": cluster.host,
        "ssh_key_file": cluster.key_file,
        "options": dict(OPTIONS),
        "srun_options": dict(SRUN_OPTIONS),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.covalent_workflow", description=__doc__)
    parser.add_argument("--electrons", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each executor, alternating")
    parser.add_argument("--csp-venv", default="/tmp/venv-csp", help="venv with covalent-slurm-plugin 0.18")
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="the local cluster's state dir")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per workflow")
    args = parser.parse_args(argv)
    csp_bin = Path(args.csp_venv) / "bin"
    if not (csp_bin / "covalent").exists():
        parser.error(
            f"no covalent in {csp_bin}: install covalent==0.240.0 covalent-slurm-plugin==0.18.0 there"
        )

    cluster = LocalCluster(args.state_dir).up()
    bench_dir = Path(cluster.state_dir) / "covalent-bench"
    bench_dir.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="covalent-bench-"))
    home = f"/home/{cluster.user}"
    ours_workdir, csp_workdir = f"{home}/covalent-bench-slurmbatch", f"{home}/covalent-bench-csp"
    try:
        bashrc = csp_job_side(csp_bin / "python", bench_dir, scratch)
        # This process is the client of both servers: isolate its covalent before importing it.
        os.environ.update(covalent_env(scratch / "client", free_port()))

        ours_root, ours_port = scratch / "slurmbatch", free_port()
        ours_env = covalent_env(ours_root, ours_port)
        write_slurm_section(
            ours_root,
            section(
                cluster,
                remote_workdir=ours_workdir,
                port=cluster.port,
                known_hosts=cluster.known_hosts,
                ssh_config=[],
                python=cluster.python,
                max_connections=2,
            ),
        )

        csp_root, csp_port = scratch / "csp", free_port()
        csp_home = csp_root / "home"
        (csp_home / ".ssh").mkdir(parents=True)
        # The plugin passes no port to asyncssh, which reads it from ~/.ssh/config.
        (csp_home / ".ssh" / "config").write_text(f"Host {cluster.host}\n    Port {cluster.port}\n")
        csp_env = covalent_env(csp_root, csp_port, home=csp_home)
        write_slurm_section(
            csp_root,
            section(
                cluster,
                remote_workdir=csp_workdir,
                bashrc_path=str(bashrc),
                # covalent, imported by every job, keeps a locked config file: one per job avoids contention.
                variables={"COVALENT_CONFIG_DIR": "/tmp/covalent-bench-csp-$SLURM_JOB_ID"},
            ),
        )

        runs: list[dict[str, Any]] = []
        with (
            covalent_server(Path(sys.executable).parent, ours_root, ours_port, ours_env) as ours,
            covalent_server(csp_bin, csp_root, csp_port, csp_env) as csp,
        ):
            for round_ in range(args.rounds):
                for name, address in (("slurmbatch_covalent", ours), ("covalent-slurm-plugin 0.18", csp)):
                    print(f"round {round_ + 1}: {name}...", flush=True)
                    run = run_workflow(address, args.electrons, cluster, args.timeout)
                    runs.append({"executor": name, "round": round_ + 1, **run})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        login(cluster, f"rm -rf {ours_workdir} {csp_workdir} /tmp/covalent-bench-csp-*")

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "electrons": args.electrons,
        "cluster": {
            "nodes": cluster.nodes,
            "cpus_per_node": cluster.cpus_per_node,
            "max_sessions": cluster.max_sessions,
        },
        "sbatch_options": OPTIONS,
        "srun_options": SRUN_OPTIONS,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"covalent-workflow-{result['date'][:10]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f'\n{args.electrons} parallel electrons, executor="slurm", one Covalent server each:\n')
    print("| executor | round | status | wall time | SSH connections | failed electrons | job-info RPCs |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['executor']} | {run['round']} | {run['status']} | {run['wall_seconds']:.1f} s"
            f" | {run['ssh_connections']} | {run['failed_electrons']} | {run['job_info_rpcs']} |"
        )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
