"""The local cluster itself: real slurmctld/slurmd behind a real sshd."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from slurmbatch.testing import ClusterSettings, LocalCluster
from slurmbatch.testing._processes import processes_marked
from slurmbatch.testing.cluster import MARKER
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.testing.pytest_plugin import TEST_STATE_ROOT

pytestmark = pytest.mark.cluster


def ssh(settings: ClusterSettings, command: str, *, check: bool = True) -> str:
    done = subprocess.run(
        ["ssh", "-F", settings.ssh_config, settings.ssh_alias, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for_state(settings: ClusterSettings, job_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ssh(settings, f"squeue -h -t all -j {job_id} -o %T").strip()
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def test_job_submitted_over_ssh_completes(slurm_cluster: ClusterSettings) -> None:
    out = f"{slurm_cluster.remote_workdir}/cluster-test-%j.out"
    ssh(slurm_cluster, f"mkdir -p {slurm_cluster.remote_workdir}")
    job_id = ssh(
        slurm_cluster, f"sbatch --parsable -o {out} --wrap='echo hello from $SLURMD_NODENAME'"
    ).strip()
    assert job_id.isdigit()
    assert wait_for_state(slurm_cluster, job_id) == "COMPLETED"
    text = ssh(slurm_cluster, f"cat {out.replace('%j', job_id)}")
    assert text.startswith("hello from node")


def test_srun_spans_both_simulated_nodes(slurm_cluster: ClusterSettings) -> None:
    out = f"{slurm_cluster.remote_workdir}/cluster-test-two-nodes-%j.out"
    ssh(slurm_cluster, f"mkdir -p {slurm_cluster.remote_workdir}")
    job_id = ssh(
        slurm_cluster, f"sbatch --parsable -N2 -o {out} --wrap='srun -N2 -l printenv SLURMD_NODENAME'"
    )
    job_id = job_id.strip()
    assert wait_for_state(slurm_cluster, job_id) == "COMPLETED"
    lines = sorted(ssh(slurm_cluster, f"cat {out.replace('%j', job_id)}").split("\n"))
    assert [line for line in lines if line] == ["0: node1", "1: node2"]


def test_job_side_python_has_the_clients_cloudpickle(slurm_cluster: ClusterSettings) -> None:
    import cloudpickle

    version = ssh(
        slurm_cluster, f"{slurm_cluster.python} -c 'import cloudpickle; print(cloudpickle.__version__)'"
    )
    assert version.strip() == cloudpickle.__version__


def test_max_sessions_is_enforced(local_cluster: LocalCluster, slurm_cluster: ClusterSettings) -> None:
    port = local_cluster.start_sshd(max_sessions=2)
    mark = SshdLogMark.now(Path(slurm_cluster.sshd_log).with_name(f"sshd-{port}.log"))

    async def open_three_channels() -> list[BaseException | None]:
        async with asyncssh.connect(
            "127.0.0.1",
            port=port,
            username=slurm_cluster.user,
            client_keys=[slurm_cluster.key_file],
            known_hosts=slurm_cluster.known_hosts,
            config=[],
        ) as conn:
            first = await conn.create_process("sleep 3")
            second = await conn.create_process("sleep 3")
            outcome: list[BaseException | None] = []
            try:
                third = await conn.create_process("true")
                third.close()
                outcome.append(None)
            except asyncssh.ChannelOpenError as exc:
                outcome.append(exc)
            first.close()
            second.close()
            return outcome

    (third,) = asyncio.run(open_three_channels())
    assert isinstance(third, asyncssh.ChannelOpenError), "a third channel must be refused at MaxSessions=2"
    assert mark.logins() == 1


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    state_dir = TEST_STATE_ROOT / "test-cluster-lifecycle"
    cli = [sys.executable, "-m", "slurmbatch.testing"]
    args = ["--state-dir", str(state_dir), "--nodes", "1"]
    up = subprocess.run(
        [*cli, "up", *args, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert up.returncode == 0, up.stderr
    settings = json.loads(up.stdout)
    for key in (
        "host",
        "port",
        "user",
        "key_file",
        "known_hosts",
        "remote_workdir",
        "slurm_conf",
        "ssh_config",
    ):
        assert settings[key], key
    try:
        sinfo = subprocess.run(
            ["ssh", "-F", settings["ssh_config"], settings["ssh_alias"], "sinfo -h -o %t"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert sinfo.stdout.split() == ["idle"]
        daemons_before = json.loads((state_dir / "cluster.json").read_text())["daemons"]

        again = subprocess.run(
            [*cli, "up", *args, "--json"], capture_output=True, text=True, timeout=120, check=True
        )
        assert json.loads(again.stdout) == settings
        assert json.loads((state_dir / "cluster.json").read_text())["daemons"] == daemons_before

        # A running job's processes (slurmstepd, the job script) must go down with the cluster too.
        subprocess.run(
            ["ssh", "-F", settings["ssh_config"], settings["ssh_alias"], "sbatch --wrap='sleep 300'"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        time.sleep(1.5)
        assert processes_marked(MARKER, str(state_dir)), "the cluster's daemons carry the marker"
    finally:
        subprocess.run([*cli, "down", *args], capture_output=True, timeout=120, check=True)
    assert processes_marked(MARKER, str(state_dir)) == []
    assert processes_marked("SLURM_CONF", settings["slurm_conf"]) == []
    for daemon in daemons_before:
        assert (
            not Path(f"/proc/{daemon['pid']}").exists()
            or "Z" in Path(f"/proc/{daemon['pid']}/stat").read_text()
        )
    status = subprocess.run([*cli, "status", *args, "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["running"] is False
