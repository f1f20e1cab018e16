"""Running the measures: P1 submit rate, P2 map rate, P3 latency, P4 end to end; P5 and citizenship
are taken from the same runs.

Each measure is one phase. Within a phase every contender's run is repeated ``mode.runs(measure)``
times, in the listed order on even repeats and in reverse order on odd ones, so that the machine's drift
(this machine is shared and noisy) lands on every contender alike. Each repeat runs every RTT: all
contenders at 0 ms, those that connect over SSH again through the latency proxy of each other RTT (the
login-node references do not cross the network). Before each run the job user's queue
is emptied (P3 measures an idle cluster; no run sees another's jobs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .citizenship import Snapshot
from .cluster import drain
from .contenders import Contender, Context, Task, invocation
from .endpoints import Endpoint
from .runner import run_driver

PHASES = ("p1", "p2", "p3", "p4", "memory")


def run_all(
    ctx: Context,
    contenders: list[Contender],
    endpoints: dict[int, Endpoint],
    say: Callable[[str], None] = print,
    phases: Sequence[str] = PHASES,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for phase in [p for p in PHASES if p in phases]:
        repeats = ctx.mode.runs(phase)
        for repeat in range(repeats):
            for rtt, endpoint in endpoints.items():
                at = attrs.evolve(ctx, endpoint=endpoint)
                pairs = [
                    (c, t)
                    for c in contenders
                    if c.unavailable is None and (rtt == 0 or c.over_ssh)
                    for t in c.tasks
                    if t.measure == phase
                ]
                for contender, task in pairs if repeat % 2 == 0 else pairs[::-1]:
                    record = run_one(at, contender, task, f"{phase}-{repeat}-{len(runs)}")
                    record["repeat"] = repeat
                    record["rtt_ms"] = rtt
                    runs.append(record)
                    say(f"{phase} [{repeat + 1}/{repeats}] {rtt} ms {contender.label}: {describe(record)}")
    return runs


def run_one(ctx: Context, contender: Contender, task: Task, run_id: str) -> dict[str, Any]:
    idle = drain(ctx.cluster)
    snapshot = Snapshot.take(ctx.cluster)
    argv, env = invocation(ctx, task, run_id)
    started = time.time()
    result = run_driver(argv, env, ctx.mode.timeout)
    costs = snapshot.since()
    if task.held or "error" in result:
        drain(ctx.cluster)
    return {
        "contender": contender.key,
        "measure": task.measure,
        "provides": list(task.provides),
        "driver": task.driver,
        "params": task.params,
        "started": started,
        "idle_before": idle,
        "result": result,
        "citizenship": costs,
    }


def describe(record: dict[str, Any]) -> str:
    result = record["result"]
    if "error" in result:
        return f"FAILED: {result['error']}"
    if "samples" in result:
        return "latency " + ", ".join(f"{s:.2f}" for s in result["samples"]) + " s"
    text = f"{result['jobs']} jobs, {result['per_second']:.1f}/s"
    if "bytes_per_future" in result:
        text += f", {result['bytes_per_future']:.0f} bytes per pending future, peak RSS {result['peak_rss_mb']:.0f} MB"
    if record["measure"] == "p4":
        text += f", all done in {result['seconds']:.1f} s"
    if result.get("failed"):
        text += f", {result['failed']} failed"
    return text
