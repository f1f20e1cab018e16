"""Submission throughput of the SDK core, and the scheduler's cost, against plain sbatch on the login node.

Measured in one run on the local cluster (jobs are submitted held, so that job launch does not interfere):
- plain ``sbatch`` in a loop on the login node, no SSH: jobs acknowledged per second;
- the same number of concurrent ``submit()`` calls through one SlurmSession: jobs acknowledged per second,
  SSH connections sshd accepted for them, channel refusals;
- scheduler job-info RPCs (slurmctld's ``sdiag``) per status interval while those jobs are live.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from slurmbatch import JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings, LocalCluster
from slurmbatch.testing.logins import SshdLogMark

RESULTS = Path(__file__).parent / "results"


def trivial() -> int:
    return 0


def login(cluster: ClusterSettings, command: str) -> str:
    done = subprocess.run(
        ["ssh", "-F", cluster.ssh_config, cluster.ssh_alias, command],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def sdiag_job_info(cluster: ClusterSettings) -> int:
    counts = 0
    for line in login(cluster, "sdiag").splitlines():
        if line.strip().startswith(("REQUEST_JOB_INFO ", "REQUEST_JOB_INFO_SINGLE ")):
            counts += int(line.split("count:")[1].split()[0])
    return counts


def plain_sbatch_loop(cluster: ClusterSettings, jobs: int) -> float:
    """Jobs/s of one sbatch loop on the login node itself (timed there, without SSH)."""
    script = (
        "s=$(date +%s.%N); "
        f"for i in $(seq {jobs}); do sbatch --hold --parsable --wrap=true >/dev/null || exit 1; done; "
        'e=$(date +%s.%N); echo "$s $e"'
    )
    start, end = map(float, login(cluster, script).split())
    login(cluster, "scancel --user $USER")
    return jobs / (end - start)


async def sdk_submit(cluster: ClusterSettings, jobs: int, observe: float) -> dict[str, Any]:
    mark = SshdLogMark.now(cluster.sshd_log)
    held = JobSpec(options={"hold": True})
    futures: list[Any] = []
    async with SlurmSession(
        "127.0.0.1",
        port=cluster.port,
        user=cluster.user,
        key_file=cluster.key_file,
        known_hosts=cluster.known_hosts,
        ssh_config=(),
        remote_workdir=cluster.remote_workdir,
        python=cluster.python,
    ) as session:
        # Opening the session is not part of the rate: it happens once per program.
        started = time.perf_counter()

        async def submit() -> None:
            futures.append(await session.submit(trivial, (), held))

        async with anyio.create_task_group() as tg:
            for _ in range(jobs):
                tg.start_soon(submit)
        elapsed = time.perf_counter() - started
        batches = session._submitter.batches
        # Counted now: the sdiag calls below log in through the system ssh client.
        logins = mark.logins()
        rpc_before, queries_before = sdiag_job_info(cluster), session._poller.scheduler_queries
        observe_start = time.perf_counter()
        await anyio.sleep(observe)
        observed = time.perf_counter() - observe_start
        rpcs = sdiag_job_info(cluster) - rpc_before
        queries = session._poller.scheduler_queries - queries_before
        await session.cancel_jobs(futures)
        for future in futures:
            with anyio.fail_after(120):
                with contextlib.suppress(Exception):
                    await future
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_second": jobs / elapsed,
        "sbatch_batches": batches,
        "ssh_logins": logins,
        "refused_channels_sshd": mark.refused_sessions(),
        "observed_seconds": observed,
        "status_queries": queries,
        "job_info_rpcs": rpcs,
        "live_jobs_while_observed": jobs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--observe", type=float, default=30.0, help="seconds to watch the status queries")
    args = parser.parse_args(argv)
    cluster = LocalCluster().up()
    login(cluster, "scancel --user $USER")
    plain = plain_sbatch_loop(cluster, args.jobs)
    sdk = anyio.run(sdk_submit, cluster, args.jobs, args.observe)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cluster": {"nodes": cluster.nodes, "cpus_per_node": cluster.cpus_per_node},
        "plain_sbatch_loop_jobs_per_second": plain,
        "sdk_submit": sdk,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"core-submit-{result['date'][:10]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| what | value |\n|---|---|")
    print(f"| plain sbatch loop on the login node | {plain:.0f} jobs/s |")
    print(
        f"| {args.jobs} concurrent submit() | {sdk['jobs_per_second']:.0f} jobs/s ({sdk['sbatch_batches']} batches) |"
    )
    print(f"| ratio | {sdk['jobs_per_second'] / plain:.2f}x |")
    print(f"| SSH connections for {args.jobs} jobs | {sdk['ssh_logins']} |")
    print(f"| channels refused by sshd | {sdk['refused_channels_sshd']} |")
    print(
        f"| status queries with {args.jobs} live jobs | {sdk['status_queries']} in {sdk['observed_seconds']:.0f} s"
        f" ({sdk['job_info_rpcs']} job-info RPCs at slurmctld) |"
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
