"""submitit 1.5 on the login node (it has no SSH): ``submit`` one job at a time, and its batch mode.

Measures: ``p1`` (``n`` held jobs through ``executor.submit``), ``batch_p1`` (``n`` held calls in
``executor.batch()`` blocks of up to ``chunk``: one job array each), ``p2`` (``n`` held calls in batches of ``chunk``: submitit does
not split an array at the cluster's MaxArraySize), ``p3`` (one trivial call, submit then
``job.result()``) and ``p4`` (``n`` calls in batches, run, until every result is in).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import submitit
from _common import Meter, pause, run


def trivial(x: int = 0) -> int:
    return x


def executor(p: dict[str, Any], *, hold: bool) -> submitit.SlurmExecutor:
    folder = f"{p['workdir']}/{uuid.uuid4().hex}/%j"
    ex = submitit.SlurmExecutor(folder=folder)
    extra = {"hold": True} if hold else {}
    ex.update_parameters(time=10, additional_parameters=extra)
    return ex


def p1(p: dict[str, Any]) -> dict[str, Any]:
    ex = executor(p, hold=True)
    meter = Meter()
    jobs = [ex.submit(trivial, i) for i in range(p["n"])]
    meter.stop()
    return {**meter.fields(len(jobs)), "sbatch_calls": len(jobs)}


def batches(ex: submitit.SlurmExecutor, n: int, chunk: int) -> list[Any]:
    jobs: list[Any] = []
    for first in range(0, n, chunk):
        with ex.batch():
            jobs += [ex.submit(trivial, i) for i in range(first, min(n, first + chunk))]
    return jobs


def batch_p1(p: dict[str, Any]) -> dict[str, Any]:
    ex = executor(p, hold=True)
    meter = Meter()
    jobs = batches(ex, p["n"], p["chunk"])
    meter.stop()
    return {**meter.fields(len(jobs)), "sbatch_calls": -(-p["n"] // p["chunk"])}


def p2(p: dict[str, Any]) -> dict[str, Any]:
    ex = executor(p, hold=True)
    meter = Meter()
    jobs = batches(ex, p["n"], p["chunk"])
    meter.stop()
    return {**meter.fields(len(jobs)), "sbatch_calls": -(-p["n"] // p["chunk"])}


def p3(p: dict[str, Any]) -> dict[str, Any]:
    ex = executor(p, hold=False)
    samples: list[float] = []
    meter = Meter()
    for i in range(p["samples"]):
        time.sleep(pause())
        started = time.perf_counter()
        if ex.submit(trivial, i).result() != i:
            raise RuntimeError("wrong result")
        samples.append(time.perf_counter() - started)
    meter.stop()
    return {"samples": samples, "cpu_seconds": meter.cpu, "jobs": len(samples)}


def p4(p: dict[str, Any]) -> dict[str, Any]:
    ex = executor(p, hold=False)
    meter = Meter()
    jobs = batches(ex, p["n"], p["chunk"])
    acknowledged = time.perf_counter() - meter.started
    values = [job.result() for job in jobs]
    meter.stop()
    if values != list(range(p["n"])):
        raise RuntimeError("wrong results")
    return {**meter.fields(len(jobs)), "submit_seconds": acknowledged}


if __name__ == "__main__":
    run({"p1": p1, "batch_p1": batch_p1, "p2": p2, "p3": p3, "p4": p4})
