"""Plain sbatch on the login node, no SSH: the scheduler's own limits and floors.

Measures: ``loops`` (P1: ``n`` held one-job sbatch calls from ``loops`` parallel shell loops), ``floor``
(P3: one trivial job, sbatch then squeue every 10 ms until it ended), ``array_submit`` (P2: held
``sbatch --array`` calls of up to 1000 tasks) and ``array_run`` (P4: the same arrays run, until squeue
shows none of their tasks left).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

from _common import Meter, pause, run

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
ARRAY_CHUNK = 1000


def sbatch(*args: str) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]


def loops(p: dict[str, Any]) -> dict[str, Any]:
    count, per_loop = p["loops"], p["n"] // p["loops"]
    loop = f"for i in $(seq {per_loop}); do sbatch --hold --parsable --wrap=true >/dev/null || exit 1; done"
    meter = Meter()
    shells = [subprocess.Popen(["bash", "-c", loop], stderr=subprocess.PIPE, text=True) for _ in range(count)]
    errors = [err.strip() for shell in shells if (err := shell.communicate()[1]) and shell.returncode]
    meter.stop()
    return {**meter.fields(per_loop * count), "errors": errors[:3], "failed_loops": len(errors)}


def trivial_wrap(python: str) -> str:
    return f"--wrap={shlex.quote(python)} -c pass"


def floor(p: dict[str, Any]) -> dict[str, Any]:
    samples: list[float] = []
    meter = Meter()
    for _ in range(p["samples"]):
        time.sleep(pause())
        started = time.perf_counter()
        job = sbatch("--output=/dev/null", trivial_wrap(p["python"]))
        state = ""
        while state not in TERMINAL:
            time.sleep(0.01)
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True
            )
            state = out.stdout.strip()
        if state != "COMPLETED":
            raise RuntimeError(f"the floor job {job} ended {state}")
        samples.append(time.perf_counter() - started)
    meter.stop()
    return {"samples": samples, "cpu_seconds": meter.cpu, "jobs": len(samples)}


def arrays(n: int, *args: str) -> list[str]:
    ids = []
    for first in range(0, n, ARRAY_CHUNK):
        last = min(n, first + ARRAY_CHUNK) - 1
        ids.append(sbatch(f"--array=0-{last - first}", *args))
    return ids


def array_submit(p: dict[str, Any]) -> dict[str, Any]:
    meter = Meter()
    ids = arrays(p["n"], "--hold", "--wrap=true")
    meter.stop()
    return {**meter.fields(p["n"]), "sbatch_calls": len(ids)}


def array_run(p: dict[str, Any]) -> dict[str, Any]:
    meter = Meter()
    ids = arrays(p["n"], "--output=/dev/null", trivial_wrap(p["python"]))
    while True:
        time.sleep(0.25)
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids), "-o", "%i"], capture_output=True, text=True
        )
        if out.returncode == 0 and not out.stdout.strip():
            break
    meter.stop()
    return {**meter.fields(p["n"]), "sbatch_calls": len(ids)}


if __name__ == "__main__":
    run({"loops": loops, "floor": floor, "array_submit": array_submit, "array_run": array_run})
