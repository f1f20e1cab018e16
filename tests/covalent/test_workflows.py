"""Real Covalent workflows, dispatched to a real Covalent server, run by slurmbatch_covalent on the local cluster."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import cloudpickle
import pytest

from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark

from .conftest import TERMINAL, CovalentServer, login_shell, wait_for_status

ct = pytest.importorskip("covalent")

pytestmark = [pytest.mark.covalent, pytest.mark.cluster]

# The server and the compute nodes cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ELECTRONS = 20


@ct.electron(executor="slurm")
def square(x: int) -> dict[str, Any]:
    print(f"squaring {x}")
    return {"value": x * x, "job": os.environ.get("SLURM_JOB_ID"), "rank": os.environ.get("SLURM_PROCID")}


@ct.lattice
def fan_out(n: int) -> list[dict[str, Any]]:
    return [square(i) for i in range(n)]


def test_twenty_parallel_electrons_share_the_connection_pool(
    covalent_server: CovalentServer, slurm_cluster: ClusterSettings
) -> None:
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    dispatch_id = ct.dispatch(fan_out)(ELECTRONS)
    status = wait_for_status(dispatch_id, TERMINAL, timeout=240)
    logins = mark.logins()

    result = ct.get_result(dispatch_id)
    assert status == "COMPLETED", result
    outputs = result.result
    assert [output["value"] for output in outputs] == [i * i for i in range(ELECTRONS)]
    assert all(output["rank"] == "0" for output in outputs)  # rank 0's value, of 2 srun tasks
    assert len({output["job"] for output in outputs}) == ELECTRONS  # one Slurm job per electron
    max_connections = covalent_server.slurm_section["max_connections"]
    assert logins <= max_connections, f"sshd accepted {logins} connections for {ELECTRONS} electrons"
    # The job's standard output reaches the node's stdout (both ranks print).
    square_nodes = _nodes(result, "square")
    assert len(square_nodes) == ELECTRONS
    stdouts = [result.get_node_result(n)["stdout"] for n in square_nodes]
    assert all(text.count("squaring") == 2 for text in stdouts), stdouts
    # Each task's files go once its result and output are in, while the shared session stays open.
    jobs_dir = f"{covalent_server.slurm_section['remote_workdir']}/jobs"
    deadline = time.monotonic() + 30
    while (left := login_shell(slurm_cluster, f"ls {jobs_dir}").split()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], left


def _nodes(result: Any, name: str) -> list[int]:
    """The ids of the nodes of the electron called ``name``."""
    graph = result.lattice.transport_graph
    return [node for node in graph._graph.nodes if graph.get_node_value(node, "name") == name]


def _node(result: Any, name: str) -> int:
    (node,) = _nodes(result, name)
    return node


def test_seed_executor_instance_with_prerun_postrun_srun_options_and_append(
    covalent_server: CovalentServer, slurm_cluster: ClusterSettings
) -> None:
    # The seed's ct.executor.SlurmExecutor example, adapted so that it runs here: the local nodes have no
    # GPUs, no environment modules, no dcgmi and no nsys. `module load` becomes the export it amounts to,
    # the dcgmi calls become srun steps that say what they stand for, and the profiler becomes `env`,
    # another command that runs the Python call it is given. constraint=gpu and -G 4 are left out; the
    # allocation asks for the 2 tasks srun starts.
    executor = ct.executor.SlurmExecutor(
        address=slurm_cluster.ssh_alias,  # a Host alias: host, port, user, key and known_hosts come from it
        ssh_config=slurm_cluster.ssh_config,
        remote_workdir=f"{covalent_server.slurm_section['remote_workdir']}/experiment1",
        python=slurm_cluster.python,
        options={"qos": "regular", "time": "01:30:00", "nodes": 1, "ntasks": 2},
        prerun_commands=[
            "export LOADED_PACKAGE=package/1.2.3",
            "srun --ntasks-per-node 1 echo dcgmi profile --pause",
        ],
        srun_options={"n": 2, "c": 1, "cpu-bind": "cores", "gpu-bind": "single:1"},
        srun_append="env PROFILER=nsys-stand-in",
        postrun_commands=["srun --ntasks-per-node 1 echo dcgmi profile --resume"],
        log_stdout=str(covalent_server.root / "seed-task.out"),
    )

    @ct.electron(executor=executor)
    def my_custom_task(x: int, y: int) -> dict[str, Any]:
        return {
            "sum": x + y,
            "rank": os.environ.get("SLURM_PROCID"),
            "tasks": os.environ.get("SLURM_STEP_NUM_TASKS"),
            "profiler": os.environ.get("PROFILER"),
            "package": os.environ.get("LOADED_PACKAGE"),
            "cwd": os.getcwd(),
        }

    @ct.lattice
    def custom(x: int, y: int) -> dict[str, Any]:
        return my_custom_task(x, y)

    dispatch_id = ct.dispatch(custom)(2, 3)
    status = wait_for_status(dispatch_id, TERMINAL, timeout=120)
    result = ct.get_result(dispatch_id)
    assert status == "COMPLETED", result
    assert result.result == {
        "sum": 5,
        "rank": "0",
        "tasks": "2",
        "profiler": "nsys-stand-in",
        "package": "package/1.2.3",
        "cwd": f"{covalent_server.slurm_section['remote_workdir']}/experiment1",
    }
    stdout = result.get_node_result(_node(result, "my_custom_task"))["stdout"]
    assert stdout.index("dcgmi profile --pause") < stdout.index("dcgmi profile --resume"), stdout
    assert (covalent_server.root / "seed-task.out").read_text() == stdout


def test_failing_electron_marks_the_node_failed_with_the_remote_traceback(
    covalent_server: CovalentServer,
) -> None:
    log = covalent_server.root / "diverge.out"

    @ct.electron(executor=ct.executor.SlurmExecutor(log_stdout=str(log), **covalent_server.slurm_section))
    def diverge(step: int) -> float:
        print(f"step {step}")
        raise FloatingPointError(f"diverged at step {step}")

    @ct.lattice
    def failing(step: int) -> float:
        return diverge(step)

    dispatch_id = ct.dispatch(failing)(7)
    status = wait_for_status(dispatch_id, TERMINAL, timeout=120)
    assert status == "FAILED"
    result = ct.get_result(dispatch_id)
    node = result.get_node_result(_node(result, "diverge"))
    assert str(node["status"]) == "FAILED"
    error = node["error"]
    assert "FloatingPointError: diverged at step 7" in error, error
    assert "Traceback (most recent call last)" in error, error
    assert "in diverge" in error, error
    # Covalent writes no log file for a task that raised; the executor does.
    assert "step 7\n" in log.read_text()


def test_cancelled_dispatch_leaves_no_job_in_slurm(
    covalent_server: CovalentServer, slurm_cluster: ClusterSettings
) -> None:
    @ct.electron(executor="slurm")
    def sleepy(seconds: int) -> int:
        time.sleep(seconds)
        return seconds

    @ct.lattice
    def long_running(seconds: int) -> int:
        return sleepy(seconds)

    dispatch_id = ct.dispatch(long_running)(600)
    job_id = _wait_for_job(slurm_cluster, dispatch_id, "RUNNING", timeout=90)

    ct.cancel(dispatch_id)
    status = wait_for_status(dispatch_id, TERMINAL, timeout=60)
    assert status == "CANCELLED"
    result = ct.get_result(dispatch_id)
    assert str(result.get_node_result(_node(result, "sleepy"))["status"]) == "CANCELLED"
    deadline = time.monotonic() + 30
    while _live_states(slurm_cluster, job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live_states(slurm_cluster, job_id) == "", f"job {job_id} is still in squeue"


def _wait_for_job(cluster: ClusterSettings, dispatch_id: str, state: str, timeout: float) -> str:
    """The id of the job of ``dispatch_id`` once it is in ``state`` (jobs are named covalent-<node>-<dispatch>)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in login_shell(cluster, "squeue -h -o '%i %T %j'").splitlines():
            job_id, job_state, name = line.split()
            if name.startswith("covalent-") and name.endswith(f"-{dispatch_id}") and job_state == state:
                return job_id
        time.sleep(0.5)
    raise AssertionError(f"no {state} job of dispatch {dispatch_id} after {timeout:.0f} s")


def _live_states(cluster: ClusterSettings, job_id: str) -> str:
    """The job's state while squeue lists it as pending, running or completing, else ''."""
    return login_shell(cluster, f"squeue -h -j {job_id} -t PD,R,CG,CF,S -o %T || true").strip()
