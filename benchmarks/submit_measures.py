"""In-process submission measurements that other benchmarks compose (the executor's, the ControlMaster's).

The side-by-side table is :mod:`benchmarks.compare`'s; these measure one session in this process:
P1 through ``submit()`` (:func:`submit_rate`), ``map()`` (:func:`map_rate`), RPCs and memory per future.
"""

from __future__ import annotations

import gc
import resource
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from slurmbatch import JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings

RESULTS = Path(__file__).parent / "results"
HELD = JobSpec(options={"hold": True})


def trivial(x: int = 0) -> int:
    return x


def login(cluster: ClusterSettings, command: str) -> str:
    done = subprocess.run(
        ["ssh", "-F", cluster.ssh_config, cluster.ssh_alias, command],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def job_info_rpcs(cluster: ClusterSettings) -> int:
    total = 0
    for line in login(cluster, "sdiag").splitlines():
        if line.strip().startswith(("REQUEST_JOB_INFO ", "REQUEST_JOB_INFO_SINGLE ")):
            total += int(line.split("count:")[1].split()[0])
    return total


def plain_loops(cluster: ClusterSettings, jobs: int, loops: int) -> float:
    """Jobs/s of ``loops`` parallel sbatch loops on the login node, timed there (no SSH in the loop)."""
    per_loop = jobs // loops
    loop = f"for i in $(seq {per_loop}); do sbatch --hold --parsable --wrap=true >/dev/null || exit 1; done"
    script = (
        "s=$(date +%s.%N); "
        + " ".join(f"({loop}) &" for _ in range(loops))
        + ' wait; e=$(date +%s.%N); echo "$s $e"'
    )
    start, end = map(float, login(cluster, script).split())
    login(cluster, "scancel --user $USER")
    return per_loop * loops / (end - start)


def session_options(cluster: ClusterSettings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a SlurmSession (or SlurmExecutor) on ``cluster``, besides the host."""
    options: dict[str, Any] = {
        "port": cluster.port,
        "user": cluster.user,
        "key_file": cluster.key_file,
        "known_hosts": cluster.known_hosts,
        "ssh_config": (),
        "remote_workdir": cluster.remote_workdir,
        "python": cluster.python,
    }
    return options | overrides


def session_for(cluster: ClusterSettings, **overrides: Any) -> SlurmSession:
    return SlurmSession("127.0.0.1", **session_options(cluster, **overrides))


async def submit_rate(
    cluster: ClusterSettings, jobs: int, *, distinct_specs: bool, **overrides: Any
) -> dict[str, Any]:
    """P1a (``distinct_specs=False``): ``jobs`` concurrent held submits; ``overrides`` are session options."""
    async with session_for(cluster, **overrides) as session:
        specs = (
            [JobSpec(options={"hold": True}, variables={"SB_I": i}) for i in range(jobs)]
            if distinct_specs
            else None
        )
        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(session.submit, trivial, (i,), specs[i] if specs else HELD)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = session._submitter.sbatch_calls
        session.detach()
    login(cluster, "scancel --user $USER")
    return {
        "jobs": jobs,
        "seconds": elapsed,
        "per_second": jobs / elapsed,
        "cpu_seconds": cpu,
        "sbatch_calls": calls,
    }


async def map_rate(cluster: ClusterSettings, items: int) -> dict[str, Any]:
    async with session_for(cluster) as session:
        started, cpu = time.perf_counter(), time.process_time()
        futures = await session.map(trivial, range(items), spec=HELD)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        arrays = len({f.job_id.split("_")[0] for f in futures})
        session.detach()
    login(cluster, "scancel --user $USER")
    return {
        "items": items,
        "seconds": elapsed,
        "per_second": items / elapsed,
        "cpu_seconds": cpu,
        "arrays": arrays,
    }


async def rpcs_for_jobs(cluster: ClusterSettings, jobs: int) -> dict[str, Any]:
    async with session_for(cluster) as session:
        before = job_info_rpcs(cluster)
        started = time.perf_counter()
        futures = await session.map(trivial, range(jobs))
        for future in futures:
            await future
        elapsed = time.perf_counter() - started
        rpcs = job_info_rpcs(cluster) - before - 1  # the sdiag call itself is not a job-info RPC; be safe
    return {"jobs": jobs, "seconds_to_all_results": elapsed, "job_info_rpcs": max(rpcs, 0)}


async def memory_per_future(cluster: ClusterSettings, futures_count: int) -> dict[str, Any]:
    async with session_for(cluster) as session:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        futures = await session.map(trivial, range(futures_count), spec=HELD)
        await anyio.sleep(1)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # What stays allocated per pending future (the futures, their tracking, their submit records).
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        session.detach()
        count = len(futures)
        del futures
    login(cluster, "scancel --user $USER")
    return {
        "futures": count,
        "bytes_per_future": grown / count,
        "client_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
