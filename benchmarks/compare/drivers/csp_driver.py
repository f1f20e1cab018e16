"""covalent-slurm-plugin 0.18's SlurmExecutor, driven directly through ``run()`` (in its own venv).

Measures: ``run`` (``n`` concurrent ``run()`` calls of a trivial task; a job counts as acknowledged when
the plugin's ``sbatch`` command returned its id, seen by timing asyncssh's ``run`` calls in this process,
and as finished when ``run()`` returned its result) and ``p3`` (one task at a time, ``run()`` to result).
The plugin itself is used unchanged; the cluster side it needs is set up by the harness.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from functools import partial
from typing import Any

import asyncssh
from _common import concurrent_tasks, run, task_latency
from covalent import TransportableObject  # type: ignore[attr-defined]
from covalent.executor.utils.wrappers import wrapper_fn
from covalent_slurm_plugin.slurm import SlurmExecutor

ACKNOWLEDGED: list[float] = []
_plain_run = asyncssh.SSHClientConnection.run


async def _timed_run(self: asyncssh.SSHClientConnection, command: str, *args: Any, **kwargs: Any) -> Any:
    done = await _plain_run(self, command, *args, **kwargs)
    if "sbatch " in command and done.returncode == 0:
        ACKNOWLEDGED.append(time.perf_counter())
    return done


asyncssh.SSHClientConnection.run = _timed_run  # type: ignore[method-assign,assignment]


def trivial(x: int) -> int:
    return x


def executor(p: dict[str, Any], cache: str) -> SlurmExecutor:
    return SlurmExecutor(
        username=p["user"],
        address=p["host"],
        ssh_key_file=p["key_file"],
        remote_workdir=p["workdir"],
        bashrc_path=p["bashrc"],
        # covalent, imported by every job, keeps a locked config file: one per job avoids contention.
        variables={"COVALENT_CONFIG_DIR": "/tmp/compare-csp-$SLURM_JOB_ID"},
        cache_dir=cache,
    )


async def one_task(p: dict[str, Any], x: int, dispatch: str, results: str) -> Any:
    # Covalent's server makes the dispatch's results directory before it runs a task; the plugin needs it.
    os.makedirs(os.path.join(results, dispatch), exist_ok=True)
    fn = partial(wrapper_fn, TransportableObject(trivial), [], [])
    metadata = {"dispatch_id": dispatch, "node_id": x, "results_dir": results}
    # A fresh executor per task, as Covalent's server makes them: the plugin keeps per-task state in it.
    output = await executor(p, results).run(fn, [TransportableObject(x)], {}, metadata)
    return output.get_deserialized()


async def many(p: dict[str, Any]) -> dict[str, Any]:
    cache = tempfile.mkdtemp(prefix="compare-csp-")
    return await concurrent_tasks(
        p["n"], lambda x, dispatch: one_task(p, x, dispatch, cache), ACKNOWLEDGED, uuid.uuid4().hex
    )


async def latency(p: dict[str, Any]) -> dict[str, Any]:
    cache = tempfile.mkdtemp(prefix="compare-csp-")
    return await task_latency(
        p["samples"], lambda x, dispatch: one_task(p, x, dispatch, cache), lambda: uuid.uuid4().hex
    )


if __name__ == "__main__":
    run({"run": lambda p: asyncio.run(many(p)), "p3": lambda p: asyncio.run(latency(p))})
