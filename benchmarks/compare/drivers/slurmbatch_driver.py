"""slurmbatch: ``SlurmSession.submit()`` and ``map()``, over SSH from this machine.

Measures: ``p1`` (``n`` concurrent held submits, one function and spec or ``distinct`` specs), ``p2``
(``map`` over ``n`` held items, pickling and upload included), ``p3`` (one trivial call, submit then
await), ``p4`` (``n`` calls through concurrent ``submit`` or through ``map``, run, until every result
is in) and ``memory`` (``map`` over ``n`` held items: what stays allocated per pending future, traced). Opening the session (once per program) is not part of any measure.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from typing import Any

import anyio
import cloudpickle
from _common import Meter, pause, run

from slurmbatch import JobSpec, SlurmSession

# The job side cannot import this script: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
HELD = JobSpec(options={"hold": True})


def trivial(x: int = 0) -> int:
    return x


def session(p: dict[str, Any]) -> SlurmSession:
    return SlurmSession(
        p["host"],
        port=p["port"],
        user=p["user"],
        key_file=p["key_file"],
        known_hosts=p["known_hosts"],
        ssh_config=(),
        remote_workdir=p["workdir"],
        python=p["python"],
    )


async def p1(p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    specs = (
        [JobSpec(options={"hold": True}, variables={"SB_I": i}) for i in range(n)] if p["distinct"] else []
    )
    async with session(p) as s:
        meter = Meter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(s.submit, trivial, (i,), specs[i] if specs else HELD)
        meter.stop()
        calls = s._submitter.sbatch_calls
        s.detach()  # held jobs: the harness cancels them
    return {**meter.fields(n), "sbatch_calls": calls}


async def p2(p: dict[str, Any]) -> dict[str, Any]:
    async with session(p) as s:
        meter = Meter()
        futures = await s.map(trivial, range(p["n"]), spec=HELD)
        meter.stop()
        arrays = len({f.job_id.split("_")[0] for f in futures})
        s.detach()
    return {**meter.fields(len(futures)), "sbatch_calls": arrays}


async def p3(p: dict[str, Any]) -> dict[str, Any]:
    samples: list[float] = []
    async with session(p) as s:
        await (await s.submit(trivial))  # uploads the runner and the function once
        meter = Meter()
        for i in range(p["samples"]):
            await anyio.sleep(pause())
            started = time.perf_counter()
            if await (await s.submit(trivial, (i,))) != i:
                raise RuntimeError("wrong result")
            samples.append(time.perf_counter() - started)
        meter.stop()
    return {"samples": samples, "cpu_seconds": meter.cpu, "jobs": len(samples)}


async def p4(p: dict[str, Any]) -> dict[str, Any]:
    n = p["n"]
    async with session(p) as s:
        meter = Meter()
        futures: list[Any] = [None] * n
        if p["via"] == "map":
            futures = await s.map(trivial, range(n))
        else:

            async def submit(i: int) -> None:
                futures[i] = await s.submit(trivial, (i,))

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(submit, i)
        acknowledged = time.perf_counter() - meter.started
        values = [await future for future in futures if future is not None]
        meter.stop()
    if values != list(range(n)):
        raise RuntimeError("wrong results")
    return {**meter.fields(n), "submit_seconds": acknowledged}


async def memory(p: dict[str, Any]) -> dict[str, Any]:
    async with session(p) as s:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        meter = Meter()
        futures = await s.map(trivial, range(p["n"]), spec=HELD)
        meter.stop()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # What stays allocated per pending future: the futures, their tracking, their submit records.
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        arrays = len({f.job_id.split("_")[0] for f in futures})
        s.detach()
    return {**meter.fields(len(futures)), "bytes_per_future": grown / len(futures), "sbatch_calls": arrays}


def under_anyio(fn: Any) -> Any:
    return lambda p: anyio.run(fn, p)


if __name__ == "__main__":
    run(
        {
            "p1": under_anyio(p1),
            "p2": under_anyio(p2),
            "p3": under_anyio(p3),
            "p4": under_anyio(p4),
            "memory": under_anyio(memory),
        }
    )
