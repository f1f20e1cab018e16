"""A tour of slurmbatch on the local cluster: submit, map, a remote exception, a cancel.

Run it with ``bash dev demo`` (which starts the cluster first), or ``python examples/demo.py`` when the
cluster runs. Pass ``trio`` to run the same code under trio.
"""

from __future__ import annotations

import math
import os
import sys
import time

import anyio

from slurmbatch import JobCancelled, JobSpec, SlurmSession
from slurmbatch.testing import LocalCluster


def simulate(x: float, y: float) -> float:
    """A stand-in for real work: runs on a compute node."""
    return math.hypot(x, y)


def where() -> str:
    return f"node {os.environ['SLURMD_NODENAME']}, job {os.environ['SLURM_JOB_ID']}"


def unstable(step: int) -> float:
    if step > 2:
        raise FloatingPointError(f"the solver diverged at step {step}")
    return 1.0 / step


def long_running() -> None:
    time.sleep(600)


async def main() -> None:
    cluster = LocalCluster().settings()
    started = time.monotonic()
    async with SlurmSession(
        "127.0.0.1",
        port=cluster.port,
        user=cluster.user,
        key_file=cluster.key_file,
        known_hosts=cluster.known_hosts,
        remote_workdir=cluster.remote_workdir,
        python=cluster.python,
    ) as session:
        spec = JobSpec(options={"time": "00:05:00", "cpus-per-task": 1})

        future = await session.submit(simulate, (3.0, 4.0), spec)
        print(f"submitted job {future.job_id}; hypot(3, 4) = {await future}")
        print(f"it ran on {await (await session.submit(where))}")

        futures = await session.map(simulate, range(10), range(10), spec=spec)
        print(f"map over 10 calls -> jobs {futures[0].job_id}..{futures[-1].job_id}:")
        print("   ", [round(await f, 2) for f in futures])

        failing = await session.submit(unstable, (3,))
        try:
            await failing
        except FloatingPointError as exc:
            print(f"job {failing.job_id} raised {type(exc).__name__}: {exc}")
            print("    " + getattr(exc, "remote_traceback", "").strip().replace("\n", "\n    "))

        doomed = await session.submit(long_running)
        await doomed.cancel()
        try:
            await doomed
        except JobCancelled as exc:
            print(f"cancelled: {exc}")
    print(f"demo done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
