"""The result file: the job's logs are durable before it appears, and it appears whole or not at all."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import cloudpickle

from .runner_support import read_outcome, run_runner, write_call


def test_result_replaces_an_old_file_atomically_with_mode_0600(tmp_path: Path, runner_file: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    result = results / "sb-0123456789abcdef.pkl"
    result.write_bytes(b"stale")
    result.chmod(0o644)
    fn_path, args_path = write_call(tmp_path, lambda: "fresh")

    proc = run_runner(runner_file, "run", fn_path, args_path, result)

    assert proc.returncode == 0, proc.stderr
    assert os.listdir(results) == [result.name]  # no temporary file left behind
    assert stat.S_IMODE(result.stat().st_mode) == 0o600
    assert cloudpickle.loads(read_outcome(result)["value"]) == "fresh"


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, runner_file: Path) -> None:
    results = tmp_path / "results"
    (results / "res.pkl").mkdir(parents=True)  # a directory where the result should go: the rename fails
    fn_path, args_path = write_call(tmp_path, lambda: 1)

    proc = run_runner(runner_file, "run", fn_path, args_path, results / "res.pkl")

    assert proc.returncode != 0
    assert os.listdir(results) == ["res.pkl"]


# Runs the runner with os.fsync and os.replace recording what they were called on, in order.
RECORDING_DRIVER = """
import os, runpy, sys

log = open(sys.argv[1], "w", buffering=1)
fsync, replace = os.fsync, os.replace

def recording_fsync(fd):
    log.write("fsync " + os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}") + "\\n")
    fsync(fd)

def recording_replace(source, destination):
    log.write(f"replace {source} {destination}\\n")
    replace(source, destination)

os.fsync, os.replace = recording_fsync, recording_replace
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_logs_and_result_are_fsynced_before_the_result_appears(tmp_path: Path, runner_file: Path) -> None:
    def chatty() -> str:
        print("out " * 1000)
        print("err " * 1000, file=sys.stderr)
        return "done"

    fn_path, args_path = write_call(tmp_path, chatty)
    (driver := tmp_path / "driver.py").write_text(RECORDING_DRIVER)
    log, stdout, stderr, result = (tmp_path / name for name in ("calls.log", "job.out", "job.err", "res.pkl"))
    argv = [sys.executable, driver, log, runner_file, "run", fn_path, args_path, result]
    with stdout.open("wb") as out, stderr.open("wb") as err:  # files, as Slurm gives a batch job
        proc = subprocess.run(list(map(str, argv)), stdout=out, stderr=err, timeout=60)

    assert proc.returncode == 0, stderr.read_text()
    calls = log.read_text().splitlines()
    renamed = next(
        i for i, call in enumerate(calls) if call.startswith("replace ") and call.endswith(f" {result}")
    )
    temporary = calls[renamed].split()[1]
    synced = {call.removeprefix("fsync ") for call in calls[:renamed] if call.startswith("fsync ")}
    assert {str(stdout), str(stderr), temporary} <= synced
    assert cloudpickle.loads(read_outcome(result)["value"]) == "done"
