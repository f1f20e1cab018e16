"""SlurmExecutor's submission throughput beside the async API's, in one run on the local cluster.

``python -m benchmarks.executor_throughput [--quick]`` measures, jobs submitted held (nothing runs):

- sync P1: ``--jobs`` (500) ``ex.submit`` calls from 8 threads, one function and spec: jobs acknowledged
  (job id known) per second, beside the async P1a (as many concurrent ``session.submit`` calls, from
  ``benchmarks.throughput``);
- sync P2: ``ex.map`` over ``--map-items`` (10 000) items until it returns (every call accepted), beside
  the async ``session.map``.

The executor is opened before the clock starts, as the session is. Each pair runs ``--repeats`` times,
the order alternating between repeats (this machine is shared and noisy); the report gives medians and
the ratio sync / async (the goal is at least 0.8), the client's CPU seconds per run (less noisy than
the wall clock on a loaded machine) and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio

from slurmbatch import SlurmExecutor
from slurmbatch.testing import ClusterSettings, LocalCluster

from .submit_measures import HELD, RESULTS, login, map_rate, session_options, submit_rate, trivial

THREADS = 8


def executor_submit_rate(cluster: ClusterSettings, jobs: int) -> dict[str, Any]:
    with SlurmExecutor("127.0.0.1", spec=HELD, **session_options(cluster)) as ex:
        barrier = threading.Barrier(THREADS + 1)
        futures: list[Any] = []

        def submit(lane: int) -> None:
            barrier.wait()
            mine = [ex.submit(trivial, i) for i in range(lane, jobs, THREADS)]
            futures.extend(mine)  # list.extend is atomic: no lock needed

        threads = [threading.Thread(target=submit, args=(lane,)) for lane in range(THREADS)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.join()
        for future in futures:
            future.wait_accepted(timeout=300)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = ex._loop._session._submitter.sbatch_calls
        ex.shutdown(wait=True, cancel_futures=True)
    login(cluster, "scancel --user $USER")
    return {
        "jobs": len(futures),
        "seconds": elapsed,
        "per_second": len(futures) / elapsed,
        "cpu_seconds": cpu,
        "sbatch_calls": calls,
    }


def executor_map_rate(cluster: ClusterSettings, items: int) -> dict[str, Any]:
    with SlurmExecutor("127.0.0.1", spec=HELD, **session_options(cluster)) as ex:
        started, cpu = time.perf_counter(), time.process_time()
        results = ex.map(trivial, range(items))  # returns once every call is accepted
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        del results
        ex.shutdown(wait=True, cancel_futures=True)  # one scancel for every held task
    login(cluster, "scancel --user $USER")
    return {"items": items, "seconds": elapsed, "per_second": items / elapsed, "cpu_seconds": cpu}


def paired(
    repeats: int, sync: Callable[[], dict[str, Any]], asynchronous: Callable[[], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
    for repeat in range(repeats):
        order = [("sync", sync), ("async", asynchronous)]
        for name, run in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(run())
    return runs


def median_rate(runs: list[dict[str, Any]]) -> float:
    return statistics.median(run["per_second"] for run in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.executor_throughput", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--map-items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 40 jobs, 400 map items, no results file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.map_items = 40, 400
    cluster = LocalCluster().up()
    login(cluster, "scancel --user $USER")
    load_before = os.getloadavg()
    submits = paired(
        args.repeats,
        lambda: executor_submit_rate(cluster, args.jobs),
        lambda: anyio.run(lambda: submit_rate(cluster, args.jobs, distinct_specs=False)),
    )
    maps = paired(
        args.repeats,
        lambda: executor_map_rate(cluster, args.map_items),
        lambda: anyio.run(map_rate, cluster, args.map_items),
    )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "threads": THREADS,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "submit": submits,
        "map": maps,
    }
    rows = [
        (
            f"{args.jobs} ex.submit from {THREADS} threads",
            "jobs/s",
            submits,
            f"async P1a, {args.jobs} submit()",
        ),
        (f"ex.map over {args.map_items} items", "tasks/s", maps, f"async map over {args.map_items} items"),
    ]
    print("| measure | sync | async | sync / async (goal >= 0.8) |\n|---|---|---|---|")
    for label, unit, runs, reference in rows:
        sync, asynchronous = median_rate(runs["sync"]), median_rate(runs["async"])
        print(
            f"| {label} vs {reference} | {sync:.0f} {unit} | {asynchronous:.0f} {unit} | "
            f"{sync / asynchronous:.2f}x |"
        )
    print(f"medians of {args.repeats} run(s) each, order alternating")
    print("client CPU seconds per run (medians), sync / async:")
    for label, _, runs, _ in rows:
        cpu = [statistics.median(run["cpu_seconds"] for run in runs[side]) for side in ("sync", "async")]
        print(f"  {label}: {cpu[0]:.3f} / {cpu[1]:.3f}")
    print(
        "load average before: {:.1f} {:.1f} {:.1f}, after: {:.1f} {:.1f} {:.1f}".format(
            *result["load_average"]["before"], *result["load_average"]["after"]
        )
    )
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"executor-throughput-{result['date'][:10]}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
