"""The Slurm command wrappers, run here with stand-in commands that record how they were called."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from slurmbatch.testing.wrappers import SUBMISSION_TIMED_OUT, SlurmWrappers


@pytest.fixture
def wrappers(tmp_path: Path) -> SlurmWrappers:
    real = tmp_path / "real"
    real.mkdir()
    for name in ("squeue", "sacct", "sbatch", "scancel"):
        # Prints its arguments and leaves a mark, so a test sees whether (and how) it ran.
        script = real / name
        script.write_text(f'#!/bin/sh\necho "{name} $*"\ntouch {tmp_path}/{name}.ran\n')
        script.chmod(0o755)
    return SlurmWrappers.create(tmp_path / "wrappers", real=real)


def run(wrappers: SlurmWrappers, command: str) -> subprocess.CompletedProcess[str]:
    line = "; ".join([*wrappers.setup_lines, command])
    env = {**os.environ, "PATH": f"{wrappers.real}:/usr/bin:/bin"}
    return subprocess.run(
        ["sh", "-c", line], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_a_slow_command_runs_the_real_one_after_its_delay(wrappers: SlurmWrappers) -> None:
    wrappers.slow("squeue", seconds=0.5)
    started = time.monotonic()
    done = run(wrappers, "squeue -h --jobs=1,2")
    assert time.monotonic() - started >= 0.5
    assert (done.returncode, done.stdout) == (0, "squeue -h --jobs=1,2\n")


def test_a_failing_command_says_a_real_looking_error_and_does_not_run(wrappers: SlurmWrappers) -> None:
    wrappers.failing("sacct")
    done = run(wrappers, "sacct -j 1")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("sacct: error: ")
    assert not (wrappers.real.parent / "sacct.ran").exists()


def test_sbatch_that_submits_then_reports_a_timeout(wrappers: SlurmWrappers) -> None:
    wrappers.submitted_then_failed()
    done = run(wrappers, "sbatch --parsable job.sh")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", SUBMISSION_TIMED_OUT + "\n")
    assert (wrappers.real.parent / "sbatch.ran").exists()  # the job was created


def test_a_noisy_command_prints_notices_around_the_real_output(wrappers: SlurmWrappers) -> None:
    wrappers.noisy("sbatch", before=["25 nodes are down for maintenance"], after=["Cite us!"])
    done = run(wrappers, "sbatch --parsable x")
    assert done.stdout.splitlines() == [
        "25 nodes are down for maintenance",
        "sbatch --parsable x",
        "Cite us!",
    ]


def test_limited_misbehaviour_takes_its_turns_then_behaves(wrappers: SlurmWrappers) -> None:
    wrappers.failing("squeue", times=2)
    codes = [run(wrappers, "squeue").returncode for _ in range(4)]
    assert codes == [1, 1, 0, 0]
    assert wrappers.calls("squeue") == 2
    wrappers.remove("squeue")
    assert run(wrappers, "squeue").stdout == "squeue \n"


def test_only_slurm_commands_are_wrapped(wrappers: SlurmWrappers) -> None:
    with pytest.raises(ValueError, match="not one of the wrapped commands"):
        wrappers.failing("ls")
