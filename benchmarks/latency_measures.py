"""In-process submit-to-result latency that other benchmarks compose (chains, the ControlMaster's).

The side-by-side P3 is :mod:`benchmarks.compare`'s; :func:`latency` measures one session in this
process, paired with the login-node floor (:func:`floor_sample`).
"""

from __future__ import annotations

import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import cloudpickle

from slurmbatch import SlurmSession
from slurmbatch.payload import unpack_outcome
from slurmbatch.testing import ClusterSettings

from .submit_measures import login

RESULTS = Path(__file__).parent / "results"


def pause() -> float:
    """Seconds to wait before a sample: the nodes are idle again when the next job arrives.

    Random, so that submissions land at random phases of slurmctld's scheduling passes (here about two
    per second: the main scheduler and backfill; a job waits for the next one). A fixed pause locks the
    two alternating kinds of samples to different phases, and biases their difference by up to 0.5 s.
    """
    return random.uniform(0.3, 1.3)


# The job side cannot import this module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def trivial(x: int = 0) -> int:
    return x


def stamp() -> float:
    """When the function ran. The client, the login node and the compute nodes share one clock here."""
    import time

    return time.time()


def job_info_rpcs(cluster: ClusterSettings) -> dict[str, int]:
    """slurmctld's job-info RPC counts by type since it started (sdiag itself sends none of these)."""
    counts: dict[str, int] = {}
    for line in login(cluster, "sdiag").splitlines():
        name = line.strip().split(" ", 1)[0]
        if name in ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE"):
            counts[name] = int(line.split("count:")[1].split()[0])
    return counts


def floor_sample(cluster: ClusterSettings, script_path: str) -> tuple[float, float]:
    """Plain ``sbatch SCRIPT`` and squeue polled every 10 ms until the job ended, on the login node:
    the times (login node clock) of the sbatch call and of squeue first reporting COMPLETED."""
    script = f"""
        s=$(date +%s.%N)
        j=$(sbatch --parsable {shlex.quote(script_path)}) || exit 1
        while :; do
            st=$(squeue -h -t all -j "$j" -o %T)
            case $st in COMPLETED|FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
            sleep 0.01
        done
        e=$(date +%s.%N)
        echo "$s $e $st"
    """
    start, end, state = login(cluster, script).split()
    if state != "COMPLETED":
        raise RuntimeError(f"the floor job ended {state}")
    return float(start), float(end)


def session_for(cluster: ClusterSettings, **overrides: Any) -> SlurmSession:
    options: dict[str, Any] = {
        "port": cluster.port,
        "user": cluster.user,
        "key_file": cluster.key_file,
        "known_hosts": cluster.known_hosts,
        "ssh_config": (),
        "remote_workdir": cluster.remote_workdir,
        "python": cluster.python,
    }
    return SlurmSession("127.0.0.1", **(options | overrides))


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min": ordered[0],
        "max": ordered[-1],
        "samples": len(ordered),
    }


async def latency(cluster: ClusterSettings, samples: int, **overrides: Any) -> dict[str, Any]:
    """Alternate floor and P3 samples in one session; break each down at the moment the function ran.

    ``overrides`` are options of that session (e.g. another transport).
    """
    floor: dict[str, list[float]] = {"total": [], "sbatch_to_function": [], "function_to_end_seen": []}
    p3: dict[str, list[float]] = {
        "total": [],
        "submit": [],
        "submit_to_function": [],
        "function_to_result": [],
    }
    async with session_for(cluster, **overrides) as session:
        warm = await session.submit(stamp)  # also uploads the runner and the function
        await warm
        # Its batch script and payload stay in W/jobs until the session ends: sbatch it as it is. Its
        # result file tells when the function ran; the session ignores it (no live job has that token).
        same_job = session._layout.script(warm.token.split(".")[0])
        result_file = session._layout.result(warm.token)
        for _ in range(samples):
            await anyio.sleep(pause())
            sbatch_at, end_seen_at = await anyio.to_thread.run_sync(floor_sample, cluster, same_job)
            async with session._pool.sftp() as sftp:
                ran_at = unpack_outcome(await sftp.get(result_file), job_id="floor")
                await sftp.remove(result_file)
            floor["total"].append(end_seen_at - sbatch_at)
            floor["sbatch_to_function"].append(ran_at - sbatch_at)
            floor["function_to_end_seen"].append(end_seen_at - ran_at)
            await anyio.sleep(pause())
            started = time.time()
            future = await session.submit(stamp)
            submitted = time.time()
            ran_at = await future
            done = time.time()
            p3["total"].append(done - started)
            p3["submit"].append(submitted - started)
            p3["submit_to_function"].append(ran_at - started)
            p3["function_to_result"].append(done - ran_at)
        poller = session._poller
        counts = {"watcher_starts": poller.watcher.starts, "own_listings": poller.ticks}
    paired = [p - f for p, f in zip(p3["total"], floor["total"], strict=True)]
    return {
        "floor": {name: summary(values) for name, values in floor.items()},
        "p3": {name: summary(values) for name, values in p3.items()},
        "p3_minus_floor_median": statistics.median(p3["total"]) - statistics.median(floor["total"]),
        "p3_minus_floor_paired_median": statistics.median(paired),
        **counts,
    }


async def rpcs_for_jobs(cluster: ClusterSettings, jobs: int) -> dict[str, Any]:
    async with session_for(cluster) as session:
        await anyio.sleep(1)  # the session's own start-up is not counted
        before = job_info_rpcs(cluster)
        started = time.perf_counter()
        futures = await session.map(trivial, range(jobs))
        values = [await future for future in futures]
        elapsed = time.perf_counter() - started
        after = job_info_rpcs(cluster)
        poller = session._poller
        result = {
            "jobs": jobs,
            "seconds_to_all_results": elapsed,
            "job_info_rpcs": {name: after.get(name, 0) - before.get(name, 0) for name in after},
            "scheduler_queries": poller.scheduler_queries,
            "own_listings": poller.ticks,
            "result_batches": poller.collections,
            "watcher_starts": poller.watcher.starts,
        }
    if values != list(range(jobs)):
        raise RuntimeError("wrong results")
    return result
