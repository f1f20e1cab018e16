"""slurmbatch_covalent's SlurmExecutor, driven directly through ``run()`` as Covalent's server does.

Measures: ``run`` (``n`` concurrent ``run()`` calls of a trivial task, a fresh executor each, as the
server makes them; a job counts as acknowledged when the executor hands Covalent its job handle, and
as finished when ``run()`` returned) and ``p3`` (one task at a time, ``run()`` to result). The shared
session is opened by one task before the clock starts, as it is in a server that already ran one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial
from typing import Any

from _common import concurrent_tasks, run, task_latency
from covalent import TransportableObject  # type: ignore[attr-defined]
from covalent.executor.utils.wrappers import wrapper_fn

from slurmbatch_covalent.slurm import SlurmExecutor

ACKNOWLEDGED: list[float] = []


class TimedExecutor(SlurmExecutor):
    """The executor with Covalent's two server hooks stood in for: no cancel requests, and a clock on
    the job handle (set as soon as sbatch gave the job id)."""

    def _has_runtime(self) -> bool:
        return True

    async def get_cancel_requested(self) -> bool:
        return False

    async def set_job_handle(self, handle: Any) -> None:
        ACKNOWLEDGED.append(time.perf_counter())


def trivial(x: int) -> int:
    return x


def executor(p: dict[str, Any]) -> TimedExecutor:
    return TimedExecutor(
        username=p["user"],
        address=p["host"],
        ssh_key_file=p["key_file"],
        port=p["port"],
        known_hosts=p["known_hosts"],
        ssh_config=[],
        python=p["python"],
        remote_workdir=p["workdir"],
    )


async def one_task(p: dict[str, Any], x: int, dispatch: str) -> Any:
    fn = partial(wrapper_fn, TransportableObject(trivial), [], [])
    metadata = {"dispatch_id": dispatch, "node_id": x, "results_dir": p["results_dir"]}
    output = await executor(p).run(fn, [TransportableObject(x)], {}, metadata)
    return output.get_deserialized()


async def many(p: dict[str, Any]) -> dict[str, Any]:
    await one_task(p, 0, uuid.uuid4().hex)  # opens the shared session before the clock starts
    ACKNOWLEDGED.clear()
    return await concurrent_tasks(
        p["n"], lambda x, dispatch: one_task(p, x, dispatch), ACKNOWLEDGED, uuid.uuid4().hex
    )


async def latency(p: dict[str, Any]) -> dict[str, Any]:
    await one_task(p, 0, uuid.uuid4().hex)
    return await task_latency(
        p["samples"], lambda x, dispatch: one_task(p, x, dispatch), lambda: uuid.uuid4().hex
    )


if __name__ == "__main__":
    run({"run": lambda p: asyncio.run(many(p)), "p3": lambda p: asyncio.run(latency(p))})
