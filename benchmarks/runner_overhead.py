"""The job-side runner's own start-up cost per trivial task, measured locally (no cluster needed).

``python -m benchmarks.runner_overhead [--runs N] [--python PATH] [--runner PATH]`` times, in rounds that
interleave them so that all see the same machine state:

- ``python -c pass``: the interpreter's own start and exit, the floor;
- the runner on a function pickled by reference (a function of an importable module, here
  ``operator.neg``): from process start until it has written its result file and exited;
- the runner on a function pickled by value (a lambda, as for functions of a user's ``__main__``),
  which cannot load without cloudpickle.

It prints the median and quartiles of each over ``--runs`` rounds and each runner's median over the
floor. ``--python`` is the interpreter that runs the tasks (default: this one; pass the cluster's job
Python to measure that one), ``--runner`` a runner file to time instead of the one the session uploads
(e.g. an older version, to compare).
"""

from __future__ import annotations

import argparse
import operator
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle

from slurmbatch.payload import runner_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner_overhead", description=__doc__)
    parser.add_argument("--runs", type=int, default=40, help="rounds to time (default 40)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the tasks")
    parser.add_argument("--runner", type=Path, help="a runner file to time instead of the uploaded one")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runner-overhead-") as scratch:
        commands = _commands(Path(scratch), options.python, options.runner)
        for command in commands.values():  # once each, untimed: the file system cache is warm for all
            _run(command)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.runs):
            for name, command in commands.items():
                samples[name].append(_run(command))
    print(f"{options.python}, {options.runs} rounds, milliseconds per task")
    print(f"{'':<28}{'median':>8}{'q1':>8}{'q3':>8}{'over floor':>12}")
    floor = statistics.median(samples["python -c pass"])
    for name, times in samples.items():
        q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
        over = f"{median - floor:+.1f}" if name != "python -c pass" else ""
        print(f"{name:<28}{median:>8.1f}{q1:>8.1f}{q3:>8.1f}{over:>12}")
    return 0


def _commands(scratch: Path, python: str, runner: Path | None) -> dict[str, list[str]]:
    runner_path = scratch / "runner-0123456789ab.py"
    runner_path.write_bytes(runner.read_bytes() if runner else runner_source())
    (scratch / "by-reference.pkl").write_bytes(cloudpickle.dumps(operator.neg))
    (scratch / "by-value.pkl").write_bytes(cloudpickle.dumps(lambda x: x + 1))
    # The session's own pickling of builtin-only arguments.
    (scratch / "args.pkl").write_bytes(pickle.dumps(((1,), {}), protocol=cloudpickle.DEFAULT_PROTOCOL))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    expect = ["--expect-python", version, "--expect-cloudpickle", cloudpickle.__version__.split(".")[0]]

    def task(function: str, result: str) -> list[str]:
        files = (scratch / function, scratch / "args.pkl", scratch / result)
        return [python, str(runner_path), "run", *map(str, files), *expect]

    return {
        "python -c pass": [python, "-c", "pass"],
        "runner, by reference": task("by-reference.pkl", "r1.pkl"),
        "runner, by value": task("by-value.pkl", "r2.pkl"),
    }


def _run(command: list[str]) -> float:
    """Milliseconds from spawning ``command`` until it exited, which it must do with status 0."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    environment["SLURM_JOB_ID"] = "1"
    start = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if completed.returncode != 0:
        raise SystemExit(f"{command} failed ({completed.returncode}): {completed.stderr.decode()}")
    return elapsed


if __name__ == "__main__":
    sys.exit(main())
