"""Chains of jobs: dependencies kept on the cluster against a client that awaits each job, in one run.

``python -m benchmarks.chains [--length N] [--samples N] [--megabytes N] [--tasks N] [--state-dir DIR]``
measures on the local cluster:

- chain: ``--length`` trivial jobs, each taking the previous one's future, all submitted at once
  (``--dependency=afterok``, the value read on the cluster), against the same chain driven from the
  client (await each job, submit the next with its value). Samples of both kinds alternate, so that
  both see the same machine state; the ratio of the medians is the figure.
- intermediate: a job returns ``--megabytes`` MB and a second job takes it, by future (the value stays
  on the cluster) and by value (awaited, then passed): the bytes the client read and wrote over SFTP,
  counted by the session's pool.
- map over a map: ``--tasks`` tasks whose task ``i`` takes task ``i`` of an earlier map, as one array
  with ``aftercorr`` against one job per task with ``afterok`` on its own task (``coalesce=False``):
  slurmctld's RPCs (``sdiag``, all message types) and the time to the last result.

It prints a table and writes the numbers to ``benchmarks/results/chains-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

import anyio
import cloudpickle

from slurmbatch import JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings, LocalCluster

from .latency_measures import RESULTS, session_for, summary
from .submit_measures import login

# The job side cannot import this module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def increment(x: int) -> int:
    return x + 1


def make_block(megabytes: int) -> bytes:
    return os.urandom(megabytes * 2**20)


def size_of(block: bytes) -> int:
    return len(block)


def rpc_counts(cluster: ClusterSettings) -> dict[str, int]:
    """slurmctld's RPC counts by message type since it started (``sdiag``)."""
    counts: dict[str, int] = {}
    for line in login(cluster, "sdiag").splitlines():
        words = line.split()
        if words and words[0].startswith(("REQUEST_", "MESSAGE_")) and "count:" in line:
            counts[words[0]] = counts.get(words[0], 0) + int(line.split("count:")[1].split()[0])
    return counts


def rpc_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # sdiag itself shows as REQUEST_STATS_INFO: one per reading, not the workload's.
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if k != "REQUEST_STATS_INFO"}
    return {k: v for k, v in delta.items() if v}


async def chain_on_cluster(session: SlurmSession, length: int) -> float:
    start = time.perf_counter()
    future = await session.submit(increment, (0,))
    for _ in range(length - 1):
        future = await session.submit(increment, (future,))
    if await future != length:
        raise RuntimeError("wrong result")
    return time.perf_counter() - start


async def chain_from_client(session: SlurmSession, length: int) -> float:
    start = time.perf_counter()
    value = 0
    for _ in range(length):
        value = await (await session.submit(increment, (value,)))
    if value != length:
        raise RuntimeError("wrong result")
    return time.perf_counter() - start


async def chains(cluster: ClusterSettings, length: int, samples: int) -> dict[str, Any]:
    on_cluster: list[float] = []
    from_client: list[float] = []
    async with session_for(cluster) as session:
        await (await session.submit(increment, (0,)))  # warm: the runner and the function are uploaded
        for _ in range(samples):
            on_cluster.append(await chain_on_cluster(session, length))
            from_client.append(await chain_from_client(session, length))
    on, off = summary(on_cluster), summary(from_client)
    return {"length": length, "on_cluster": on, "from_client": off, "speedup": off["median"] / on["median"]}


async def intermediate(cluster: ClusterSettings, megabytes: int) -> dict[str, Any]:
    result: dict[str, Any] = {"megabytes": megabytes}
    async with session_for(cluster) as session:
        counter = session._pool.transfers
        read, written = counter.bytes_read, counter.bytes_written
        start = time.perf_counter()
        block = await session.submit(make_block, (megabytes,))
        size = await session.submit(size_of, (block,))
        if await size != megabytes * 2**20:
            raise RuntimeError("wrong size")
        result["by_future"] = {
            "seconds": time.perf_counter() - start,
            "bytes_read": counter.bytes_read - read,
            "bytes_written": counter.bytes_written - written,
        }
        read, written = counter.bytes_read, counter.bytes_written
        start = time.perf_counter()
        value = await (await session.submit(make_block, (megabytes,)))
        if await (await session.submit(size_of, (value,))) != megabytes * 2**20:
            raise RuntimeError("wrong size")
        result["by_value"] = {
            "seconds": time.perf_counter() - start,
            "bytes_read": counter.bytes_read - read,
            "bytes_written": counter.bytes_written - written,
        }
    return result


async def map_over_map(cluster: ClusterSettings, tasks: int) -> dict[str, Any]:
    result: dict[str, Any] = {"tasks": tasks}
    async with session_for(cluster) as session:
        await (await session.submit(increment, (0,)))
        for name, spec in (("aftercorr", JobSpec()), ("afterok_per_task", JobSpec(coalesce=False))):
            before = rpc_counts(cluster)
            start = time.perf_counter()
            first = await session.map(increment, range(tasks))
            second = await session.map(increment, first, spec=spec)
            values = [await f for f in second]
            seconds = time.perf_counter() - start
            if values != [i + 2 for i in range(tasks)]:
                raise RuntimeError("wrong results")
            delta = rpc_delta(before, rpc_counts(cluster))
            result[name] = {
                "seconds": seconds,
                "jobs_of_the_second_map": len({f.job_id.split("_")[0] for f in second}),
                "rpcs": sum(delta.values()),
                "rpcs_by_type": delta,
            }
    return result


def table(result: dict[str, Any]) -> str:
    chain = result["chain"]
    on, off = chain["on_cluster"], chain["from_client"]
    lines = [
        f"chain of {chain['length']} trivial jobs, {on['samples']} samples each (median / min / max, seconds):",
        f"  dependencies on the cluster  {on['median']:.2f} / {on['min']:.2f} / {on['max']:.2f}",
        f"  awaited from the client      {off['median']:.2f} / {off['min']:.2f} / {off['max']:.2f}",
        f"  speed-up                     {chain['speedup']:.1f}x",
    ]
    mid = result["intermediate"]
    for name in ("by_future", "by_value"):
        run = mid[name]
        lines.append(
            f"{mid['megabytes']} MB intermediate {name.replace('_', ' ')}: client read {run['bytes_read']:,} B, "
            f"wrote {run['bytes_written']:,} B, {run['seconds']:.1f} s"
        )
    maps = result["map_over_map"]
    for name in ("aftercorr", "afterok_per_task"):
        run = maps[name]
        lines.append(
            f"map over a map of {maps['tasks']}, {name}: {run['jobs_of_the_second_map']} job(s), "
            f"{run['rpcs']} slurmctld RPCs, {run['seconds']:.1f} s  {run['rpcs_by_type']}"
        )
    before, after = result["load_average_before"], result["load_average_after"]
    lines.append(f"load average (1 min) before {before[0]:.1f}, after {after[0]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chains", description=__doc__)
    parser.add_argument("--length", type=int, default=20, help="jobs in a chain")
    parser.add_argument("--samples", type=int, default=3, help="chains of each kind")
    parser.add_argument("--megabytes", type=int, default=100, help="size of the intermediate value")
    parser.add_argument("--tasks", type=int, default=50, help="tasks of each map of the map-over-map run")
    parser.add_argument("--state-dir", help="the local cluster's state directory")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir).up()
    result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    result["load_average_before"] = os.getloadavg()
    result["chain"] = anyio.run(chains, cluster, args.length, args.samples)
    result["intermediate"] = anyio.run(intermediate, cluster, args.megabytes)
    result["map_over_map"] = anyio.run(map_over_map, cluster, args.tasks)
    result["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"chains-{result['date'][:10]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
