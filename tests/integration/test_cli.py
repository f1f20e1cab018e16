"""The ``slurmbatch`` command, run as a user types it (a subprocess), against the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings, LocalCluster

from .conftest import session_options

pytestmark = pytest.mark.cluster
# The job side cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EVERY_CHECK = [
    "address",
    "port",
    "host key",
    "login",
    "MaxSessions",
    "login shell",
    "start-up files",
    "Slurm commands",
    "remote Python",
    "accounting",
    "MaxArraySize",
    "Slurm version",
    "work directory",
    "test job",
]


def slurmbatch_command() -> list[str]:
    """The console script next to this interpreter (as installed), else the module."""
    script = Path(sys.executable).with_name("slurmbatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "slurmbatch.cli"]


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*slurmbatch_command(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def connection_flags(cluster: ClusterSettings, *, known_hosts: str | None = None) -> list[str]:
    return [
        "--port",
        str(cluster.port),
        "--user",
        cluster.user,
        "--key-file",
        cluster.key_file,
        "--known-hosts",
        known_hosts or cluster.known_hosts,
        "--ssh-config",
        os.devnull,
        "--remote-workdir",
        cluster.remote_workdir,
        "--python",
        cluster.python,
    ]


def test_doctor_passes_every_step_on_the_local_cluster(slurm_cluster: ClusterSettings) -> None:
    done = run_cli("doctor", "127.0.0.1", *connection_flags(slurm_cluster), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    verdicts = {check["name"]: check["verdict"] for check in report["checks"]}
    assert list(verdicts) == EVERY_CHECK
    assert set(verdicts.values()) <= {"ok", "warn"}, report
    by_name = {check["name"]: check for check in report["checks"]}
    assert "publickey" in by_name["login"]["detail"]
    assert by_name["MaxSessions"]["detail"].startswith("10 channels")  # the local sshd's MaxSessions
    assert "ran on" in by_name["test job"]["detail"]

    human = run_cli("doctor", "127.0.0.1", *connection_flags(slurm_cluster))
    assert human.returncode == 0, human.stdout + human.stderr
    assert "A session to this cluster would work." in human.stdout
    assert "FAIL" not in human.stdout


def test_doctor_names_an_unknown_host_key_and_the_line_that_adds_it(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = run_cli("doctor", "127.0.0.1", *connection_flags(slurm_cluster, known_hosts=str(empty)))
    assert done.returncode == 1
    assert f"ssh-keyscan -p {slurm_cluster.port} 127.0.0.1 >> {empty}" in done.stdout
    assert "would not work" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_doctor_reports_a_port_nothing_listens_on(slurm_cluster: ClusterSettings) -> None:
    flags = connection_flags(slurm_cluster)
    flags[1] = "1"  # --port 1
    done = run_cli("doctor", "127.0.0.1", *flags, "--json")
    assert done.returncode == 1
    checks = json.loads(done.stdout)["checks"]
    assert [(c["name"], c["verdict"]) for c in checks] == [("address", "ok"), ("port", "fail")]


def greet() -> str:
    print("hello from the job")
    return "greeted"


def answer() -> int:
    return 42


def linger() -> None:
    time.sleep(300)


def test_jobs_logs_cancel_and_collect_from_the_journal(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    options: dict[str, Any] = session_options(slurm_cluster, journal=journal, cleanup=False)
    spec = JobSpec(options={"time": "00:06:00"})

    async def leave_jobs_behind() -> tuple[str, str, str, str]:
        async with SlurmSession("127.0.0.1", **options) as session:
            greeted = await session.submit(greet, (), spec)
            assert await greeted == "greeted"
            answered = await session.submit(answer, (), spec)
            lingering = await session.submit(linger, (), spec)
            session.detach()
            return session.id, greeted.job_id, answered.job_id, lingering.job_id

    session_id, greeted, answered, lingering = anyio.run(leave_jobs_behind)
    flags = ["--journal", str(journal)]

    listed = run_cli("jobs", *flags)
    assert listed.returncode == 0, listed.stderr
    assert session_id in listed.stdout and "submitted" in listed.stdout  # the table
    rows = json.loads(run_cli("jobs", "--json", *flags).stdout)
    # Collected already, the first job is left out: only --all shows it.
    assert [(r["session"], r["job_id"], r["state"]) for r in rows] == [
        (session_id, answered, "submitted"),
        (session_id, lingering, "submitted"),
    ]
    every = json.loads(run_cli("jobs", "--all", "--json", "--session", session_id, *flags).stdout)
    assert (every[0]["job_id"], every[0]["state"]) == (greeted, "COMPLETED")

    logs = run_cli("logs", greeted, *flags, *connection_flags(slurm_cluster))
    assert logs.returncode == 0, logs.stderr
    assert "hello from the job" in logs.stdout

    cancelled = run_cli("cancel", lingering, *flags, *connection_flags(slurm_cluster))
    assert cancelled.returncode == 0, cancelled.stderr
    assert lingering in cancelled.stdout

    quick = ["--status-interval", "0.5", "2"]  # the cancelled job is learnt from squeue, not a result file
    collected = run_cli("collect", session_id, *flags, *quick, *connection_flags(slurm_cluster))
    assert collected.returncode == 1, collected.stdout + collected.stderr  # one job was cancelled
    assert f"job {answered}: 42" in collected.stdout
    assert f"job {lingering}: JobCancelled" in collected.stdout
    assert json.loads(run_cli("jobs", "--json", *flags).stdout) == []  # nothing left uncollected


def leave_behind(options: dict[str, Any], *functions: Any) -> tuple[str, list[str]]:
    """Submit ``functions`` in one session, detach from them and return its id and their job ids."""

    async def submit_and_detach() -> tuple[str, list[str]]:
        async with SlurmSession("127.0.0.1", **options) as session:
            spec = JobSpec(options={"time": "00:06:00"})
            futures = [await session.submit(function, (), spec) for function in functions]
            session.detach()
            return session.id, [str(future.job_id) for future in futures]

    return anyio.run(submit_and_detach)


def test_collect_saves_each_result_to_a_file(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    before = time.time()
    session_id, job_ids = leave_behind(session_options(slurm_cluster, journal=journal), answer, greet)
    flags = ["--journal", str(journal)]
    rows = json.loads(run_cli("jobs", "--json", *flags).stdout)
    assert [r["job_id"] for r in rows] == job_ids
    assert all(before <= r["submitted"] <= time.time() for r in rows)  # when sbatch accepted each one
    assert "submitted" in run_cli("jobs", *flags).stdout.splitlines()[2]  # the table's header row

    results = tmp_path / "results"
    collected = run_cli(
        "collect", session_id, "--save", str(results), *flags, *connection_flags(slurm_cluster)
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    for job_id in job_ids:
        assert f"job {job_id}: saved to {results / f'{job_id}.pickle'}" in collected.stdout
    saved = {path.name: cloudpickle.loads(path.read_bytes()) for path in results.iterdir()}
    assert saved == {f"{job_ids[0]}.pickle": 42, f"{job_ids[1]}.pickle": "greeted"}
    assert json.loads(run_cli("jobs", "--json", *flags).stdout) == []


def test_cancel_a_session_cancels_every_job_it_left(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    session_id, job_ids = leave_behind(session_options(slurm_cluster, journal=journal), linger, linger)
    flags = ["--journal", str(journal), *connection_flags(slurm_cluster)]

    unknown = run_cli("cancel", "session-0000", *flags)
    assert unknown.returncode == 1
    assert "knows no session 'session-0000'" in unknown.stderr and "Traceback" not in unknown.stderr

    cancelled = run_cli("cancel", session_id, *flags)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"scancel sent on 127.0.0.1 for: {', '.join(job_ids)}" in cancelled.stdout

    # What Slurm did: both jobs end cancelled (learnt from the scheduler, there is no result file).
    collected = run_cli("collect", session_id, *flags, "--status-interval", "0.5", "2")
    assert collected.returncode == 1, collected.stdout + collected.stderr
    for job_id in job_ids:
        assert f"job {job_id}: JobCancelled" in collected.stdout
    assert json.loads(run_cli("jobs", "--json", "--journal", str(journal)).stdout) == []


def test_unknown_names_are_plain_errors(tmp_path: Path) -> None:
    missing = run_cli("jobs", "--journal", str(tmp_path / "none.sqlite3"))
    assert missing.returncode == 1
    assert "There is no journal at" in missing.stderr and "Traceback" not in missing.stderr


def test_cluster_status_is_the_local_clusters(local_cluster: LocalCluster) -> None:
    done = run_cli("cluster", "status", "--json", "--state-dir", str(local_cluster.state_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["running"] is True
