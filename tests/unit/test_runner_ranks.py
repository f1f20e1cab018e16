"""The ranks of a multi-task job: each writes its own outcome, and gather picks the job's."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import cloudpickle

from .runner_support import read_outcome, run_runner, write_call


class Boom(Exception):
    """An exception class the job side only knows because this module is pickled by value."""


def rank_value(scale: int, failing_ranks: tuple[int, ...] = ()) -> int:
    rank = int(os.environ["SLURM_PROCID"])
    if rank in failing_ranks:
        raise Boom(f"rank {rank} failed")
    return rank * scale + 100


def run_ranks(
    runner_path: Path, directory: Path, ranks: list[int], *args: Any, restarts: int | None = None
) -> tuple[Path, Path, list[subprocess.CompletedProcess[str]]]:
    """Run ``rank_value(*args)`` as the ranks ``ranks`` of a step, after ``restarts`` requeues if given."""
    fn_path, args_path = write_call(directory, rank_value, *args)
    rank_dir = directory / "ranks"
    result = directory / "res.pkl"
    restart = {} if restarts is None else {"SLURM_RESTART_COUNT": str(restarts)}
    procs = [
        run_runner(
            runner_path,
            "run",
            fn_path,
            args_path,
            result,
            "--rank-dir",
            rank_dir,
            env={"SLURM_PROCID": str(r), **restart},
        )
        for r in ranks
    ]
    return rank_dir, result, procs


def test_ranks_write_their_own_files_and_gather_keeps_rank_0(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    rank_dir, result, procs = run_ranks(runner_file, tmp_path, [0, 1, 2], 10)

    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert not result.exists()  # only gather writes the result file
    assert os.listdir(rank_dir) == ["attempt-0"]  # the first attempt's: SLURM_RESTART_COUNT is unset
    attempt = rank_dir / "attempt-0"
    assert sorted(os.listdir(attempt)) == ["rank-0.pkl", "rank-1.pkl", "rank-2.pkl"]
    assert stat.S_IMODE(rank_dir.stat().st_mode) == stat.S_IMODE(attempt.stat().st_mode) == 0o700
    assert read_outcome(attempt / "rank-2.pkl")["value"] is None  # only rank 0 ships its value
    assert read_outcome(attempt / "rank-2.pkl")["rank"] == 2

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "3")

    assert proc.returncode == 0
    outcome = read_outcome(result)
    assert (outcome["kind"], outcome["rank"]) == ("value", 0)
    assert cloudpickle.loads(outcome["value"]) == 100


def test_gather_reports_the_first_failing_rank(tmp_path: Path, runner_file: Path, by_value: None) -> None:
    rank_dir, result, procs = run_ranks(runner_file, tmp_path, [0, 1, 2], 10, (2, 1))
    assert [proc.returncode for proc in procs] == [0, 1, 1]

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "3")

    assert proc.returncode == 1
    outcome = read_outcome(result)
    assert (outcome["kind"], outcome["rank"], outcome["message"]) == ("exception", 1, "rank 1 failed")


def test_gather_names_the_ranks_that_wrote_nothing(tmp_path: Path, runner_file: Path, by_value: None) -> None:
    rank_dir, result, _ = run_ranks(runner_file, tmp_path, [0, 2], 10)

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "4")

    assert proc.returncode == 1
    outcome = read_outcome(result)
    assert outcome["kind"] == "exception"
    assert outcome["exception"] is None
    assert f"Rank(s) 1, 3 of 4 wrote no outcome to {rank_dir}" in outcome["message"]


def test_gather_after_a_requeue_ignores_the_ranks_of_the_earlier_attempt(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    rank_dir, result, _ = run_ranks(runner_file, tmp_path, [0, 1], 10)  # the first attempt: both returned
    # The job was requeued (a node failed, say): in its second attempt rank 1 died before it could write.
    *_, procs = run_ranks(runner_file, tmp_path, [0], 10, restarts=1)
    assert [proc.returncode for proc in procs] == [0]

    proc = run_runner(
        runner_file,
        "gather",
        result,
        "--rank-dir",
        rank_dir,
        "--ntasks",
        "2",
        env={"SLURM_RESTART_COUNT": "1"},
    )

    assert proc.returncode == 1
    outcome = read_outcome(result)
    assert outcome["kind"] == "exception"
    assert f"Rank(s) 1 of 2 wrote no outcome to {rank_dir / 'attempt-1'}" in outcome["message"]
    assert sorted(os.listdir(rank_dir)) == ["attempt-0", "attempt-1"]


def test_a_requeued_job_gathers_its_own_attempt(tmp_path: Path, runner_file: Path, by_value: None) -> None:
    run_ranks(runner_file, tmp_path, [0, 1], 10, (1,), restarts=2)  # rank 1 failed in the third attempt
    rank_dir, result, _ = run_ranks(runner_file, tmp_path, [0, 1], 20, restarts=3)  # the fourth returned

    proc = run_runner(
        runner_file,
        "gather",
        result,
        "--rank-dir",
        rank_dir,
        "--ntasks",
        "0",
        env={"SLURM_RESTART_COUNT": "3"},
    )

    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(result)["value"]) == 100
