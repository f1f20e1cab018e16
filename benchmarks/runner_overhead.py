"""The job-side runner's own start-up cost per trivial task, measured locally (no cluster needed).

``python -m benchmarks.runner_overhead [--runs N] [--python PATH] [--also RUNNER_FILE ...]`` times, in
rounds that interleave them so that all see the same machine state:

- ``python -c pass``: the interpreter's own start and exit, the floor;
- the runner on a function pickled by reference (a function of an importable module, here
  ``operator.neg``): from process start until it has written its result file and exited;
- the runner on a function pickled by value (a lambda, as for functions of a user's ``__main__``),
  which cannot load without cloudpickle.

The runner is the file the session uploads; ``--also`` adds another runner file (an older version, say)
to the same rounds, so that both are compared on the same machine state. Every command's stdout and
stderr go to a file, as a batch job's do (the runner fsyncs them before it writes its result).
``--python`` is the interpreter that runs the tasks (default: this one; pass the cluster's job Python
to measure that one).

It prints, per command, the median wall time with its quartiles and the median over the floor, and the
median CPU time (user + system) of the process, which a loaded machine disturbs less.
"""

from __future__ import annotations

import argparse
import operator
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle

from slurmbatch.payload import runner_source

_FLOOR = "python -c pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner_overhead", description=__doc__)
    parser.add_argument("--runs", type=int, default=40, help="rounds to time (default 40)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the tasks")
    parser.add_argument("--also", type=Path, action="append", default=[], help="another runner file to time")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runner-overhead-") as scratch:
        commands = _commands(Path(scratch), options.python, options.also)
        logs = Path(scratch) / "job.log"
        for command in commands.values():  # once each, untimed: the file system cache is warm for all
            _run(command, logs)
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.runs):
            for name, command in commands.items():
                elapsed, used = _run(command, logs)
                wall[name].append(elapsed)
                cpu[name].append(used)
    print(f"{options.python}, {options.runs} rounds, milliseconds per task")
    print(f"{'':<40}{'median':>8}{'q1':>8}{'q3':>8}{'over floor':>12}{'cpu':>8}{'over floor':>12}")
    floor, cpu_floor = statistics.median(wall[_FLOOR]), statistics.median(cpu[_FLOOR])
    for name, times in wall.items():
        q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
        used = statistics.median(cpu[name])
        over, cpu_over = (
            ("", "") if name == _FLOOR else (f"{median - floor:+.1f}", f"{used - cpu_floor:+.1f}")
        )
        print(f"{name:<40}{median:>8.1f}{q1:>8.1f}{q3:>8.1f}{over:>12}{used:>8.1f}{cpu_over:>12}")
    return 0


def _commands(scratch: Path, python: str, others: list[Path]) -> dict[str, list[str]]:
    (scratch / "by-reference.pkl").write_bytes(cloudpickle.dumps(operator.neg))
    (scratch / "by-value.pkl").write_bytes(cloudpickle.dumps(lambda x: x + 1))
    # The session's own pickling of builtin-only arguments.
    (scratch / "args.pkl").write_bytes(pickle.dumps(((1,), {}), protocol=cloudpickle.DEFAULT_PROTOCOL))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    expect = ["--expect-python", version, "--expect-cloudpickle", cloudpickle.__version__.split(".")[0]]
    commands = {_FLOOR: [python, "-c", "pass"]}
    runners = {"uploaded runner": runner_source(), **{str(path): path.read_bytes() for path in others}}
    for number, (label, source) in enumerate(runners.items()):
        runner = scratch / str(number) / "runner-0123456789ab.py"
        runner.parent.mkdir()
        runner.write_bytes(source)
        for kind in ("by-reference", "by-value"):
            files = (scratch / f"{kind}.pkl", scratch / "args.pkl", runner.parent / f"{kind}.result.pkl")
            commands[f"{label}, {kind.replace('-', ' ')}"] = [
                python,
                str(runner),
                "run",
                *map(str, files),
                *expect,
            ]
    return commands


def _run(command: list[str], logs: Path) -> tuple[float, float]:
    """Wall and CPU milliseconds of ``command`` from spawn to exit, which must be with status 0.

    Its stdout and stderr go to the file ``logs``, as a batch job's go to its log files.
    """
    # As a batch job's: no Slurm variables of ours, and bytecode may be written (the runner's own cache).
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SLURM_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    environment["SLURM_JOB_ID"] = "1"
    with logs.open("wb") as output:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        completed = subprocess.run(command, env=environment, stdout=output, stderr=output, check=False)
        elapsed = (time.perf_counter() - start) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{command} failed ({completed.returncode}): {logs.read_text()}")
    used = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return elapsed, used


if __name__ == "__main__":
    sys.exit(main())
