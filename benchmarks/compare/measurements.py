"""Running the measures: P1 submit rate, P2 map rate, P3 latency, P4 end to end; P5 and citizenship
are taken from the same runs.

Each measure is one phase. Within a phase every contender's run is repeated ``mode.runs(measure)``
times, in the listed order on even repeats and in reverse order on odd ones, so that the machine's drift
(this machine is shared and noisy) lands on every contender alike. Before each run the job user's queue
is emptied (P3 measures an idle cluster; no run sees another's jobs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .citizenship import Snapshot
from .cluster import drain
from .contenders import Contender, Context, Task, invocation
from .runner import run_driver

PHASES = ("p1", "p2", "p3", "p4")


def run_all(
    ctx: Context, contenders: list[Contender], say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for phase in PHASES:
        pairs = [(c, t) for c in contenders if c.unavailable is None for t in c.tasks if t.measure == phase]
        repeats = ctx.mode.runs(phase)
        for repeat in range(repeats):
            for contender, task in pairs if repeat % 2 == 0 else pairs[::-1]:
                record = run_one(ctx, contender, task, f"{phase}-{repeat}-{len(runs)}")
                record["repeat"] = repeat
                runs.append(record)
                say(f"{phase} [{repeat + 1}/{repeats}] {contender.label}: {describe(record)}")
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
    if record["measure"] == "p4":
        text += f", all done in {result['seconds']:.1f} s"
    if result.get("failed"):
        text += f", {result['failed']} failed"
    return text
