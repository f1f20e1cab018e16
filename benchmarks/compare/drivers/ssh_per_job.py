"""What a naive script does: one ``ssh host sbatch`` per job, a new SSH connection every time.

Measures: ``p1`` (``n`` held jobs, one after the other) and ``p3`` (one trivial job: ssh sbatch, ssh
squeue every 0.5 s until it ended, ssh cat of its output).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

from _common import Meter, pause, refused, run

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def ssh(p: dict[str, Any], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", p["ssh_config"], p["ssh_alias"], command], capture_output=True, text=True, check=False
    )


def p1(p: dict[str, Any]) -> dict[str, Any]:
    errors: list[str] = []
    meter = Meter()
    for _ in range(p["n"]):
        done = ssh(p, "sbatch --hold --parsable --wrap=true")
        if done.returncode != 0:
            errors.append(done.stderr.strip()[-300:])
    meter.stop()
    acknowledged = p["n"] - len(errors)
    return {
        **meter.fields(acknowledged),
        "failed": len(errors),
        "refused": refused(errors),
        "errors": errors[:3],
    }


def p3(p: dict[str, Any]) -> dict[str, Any]:
    samples: list[float] = []
    meter = Meter()
    for i in range(p["samples"]):
        time.sleep(pause())
        out = f"{p['workdir']}/ssh-per-job-{i}.out"
        started = time.perf_counter()
        submitted = ssh(
            p,
            f"mkdir -p {shlex.quote(p['workdir'])} && sbatch --parsable --output={shlex.quote(out)} "
            f"--wrap={shlex.quote(shlex.quote(p['python']) + ' -c ' + shlex.quote('print(0)'))}",
        )
        if submitted.returncode != 0:
            raise RuntimeError(f"sbatch over ssh failed: {submitted.stderr.strip()}")
        job, state = submitted.stdout.strip(), ""
        while state not in TERMINAL:
            time.sleep(0.5)
            state = ssh(p, f"squeue -h -t all -j {job} -o %T").stdout.strip()
        result = ssh(p, f"cat {shlex.quote(out)}").stdout.strip()
        if state != "COMPLETED" or result != "0":
            raise RuntimeError(f"job {job} ended {state} with output {result!r}")
        samples.append(time.perf_counter() - started)
    meter.stop()
    return {"samples": samples, "cpu_seconds": meter.cpu, "jobs": len(samples)}


if __name__ == "__main__":
    run({"p1": p1, "p3": p3})
