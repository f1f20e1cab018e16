"""What every driver shares (stdlib only: drivers run in other interpreters, some on the login node).

A driver is started with one JSON argument (its parameters) and prints one JSON object as its last
line of output. It times only what it measures; the CPU time it reports is its own plus that of the
child processes it waited for, over the measured part; peak RSS is the largest of the whole run.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

# What clients say when sshd turned them away (MaxStartups, MaxSessions).
REFUSALS = (
    "open failed",
    "ChannelOpenError",
    "ConnectionLost",
    "kex_exchange_identification",
    "reset by peer",
)


def refused(errors: list[str]) -> int:
    """How many of ``errors`` are refusals by sshd."""
    return sum(1 for error in errors if any(text in error for text in REFUSALS))


def params() -> dict[str, Any]:
    """The driver's parameters: its one command-line argument, a JSON object."""
    loaded: dict[str, Any] = json.loads(sys.argv[1])
    return loaded


def cpu_seconds() -> float:
    """User + system CPU time of this process and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """The largest resident set of this process or of any child it waited for, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def pause() -> float:
    """A random pause before a latency sample: lands submissions at random phases of the scheduler."""
    return random.uniform(0.3, 1.3)


def run(measures: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Run the measure named in the parameters; print its result (or the error) as JSON."""
    given = params()
    try:
        result = measures[given["measure"]](given)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    result.setdefault("peak_rss_mb", peak_rss_mb())
    print(json.dumps(result), flush=True)


class Meter:
    """Wall time and CPU time of a measured section."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._cpu = cpu_seconds()
        self.seconds = 0.0
        self.cpu = 0.0

    def stop(self) -> Meter:
        self.seconds = time.perf_counter() - self.started
        self.cpu = cpu_seconds() - self._cpu
        return self

    def fields(self, jobs: int) -> dict[str, Any]:
        """The usual result fields for ``jobs`` jobs measured by this meter."""
        return {
            "jobs": jobs,
            "seconds": self.seconds,
            "per_second": jobs / self.seconds if self.seconds > 0 else 0.0,
            "cpu_seconds": self.cpu,
        }


#: One Covalent task through an executor's ``run()``: ``(x, dispatch id) -> the task's output``.
OneTask = Callable[[int, str], Awaitable[Any]]


async def concurrent_tasks(
    n: int, one_task: OneTask, acknowledged: list[float], dispatch: str
) -> dict[str, Any]:
    """Run ``n`` tasks of one dispatch at once; ``acknowledged`` collects when each job got its id."""
    finished: list[float] = []
    errors: list[str] = []

    async def task(x: int) -> None:
        try:
            if await one_task(x, dispatch) != x:
                raise RuntimeError("wrong result")
            finished.append(time.perf_counter())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    meter = Meter()
    await asyncio.gather(*(task(i) for i in range(n)))
    meter.stop()
    acked = len(acknowledged)
    ack_seconds = (max(acknowledged) - meter.started) if acknowledged else meter.seconds
    return {
        "jobs": n,
        "acknowledged": acked,
        "ack_seconds": ack_seconds,
        "per_second": acked / ack_seconds if ack_seconds > 0 else 0.0,
        "seconds": meter.seconds,
        "finished": len(finished),
        "cpu_seconds": meter.cpu,
        "failed": len(errors),
        "refused": refused(errors),
        "errors": errors[:5],
    }


async def task_latency(samples: int, one_task: OneTask, new_dispatch: Callable[[], str]) -> dict[str, Any]:
    """Run ``samples`` tasks one at a time, each after a random pause; their run-to-result times."""
    seconds: list[float] = []
    meter = Meter()
    for i in range(samples):
        await asyncio.sleep(pause())
        started = time.perf_counter()
        if await one_task(i, new_dispatch()) != i:
            raise RuntimeError("wrong result")
        seconds.append(time.perf_counter() - started)
    meter.stop()
    return {"samples": seconds, "cpu_seconds": meter.cpu, "jobs": len(seconds)}
