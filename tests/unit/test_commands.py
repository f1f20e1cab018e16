"""Command lines for the Slurm tools, and the shell quoting of everything that reaches a shell."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurmbatch.slurm import (
    SQUEUE_FORMAT,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    scontrol_config_argv,
    shell_join,
    squeue_argv,
)


def test_sbatch_argv() -> None:
    assert sbatch_argv("/w/jobs/sb-1/job.sh") == ["sbatch", "--parsable", "/w/jobs/sb-1/job.sh"]
    assert sbatch_argv("/w/a b.sh", extra=["--hold"]) == ["sbatch", "--parsable", "--hold", "/w/a b.sh"]


def test_squeue_argv() -> None:
    assert squeue_argv(["12", "13_4", "12"]) == [
        "squeue",
        "--noheader",
        "--states=all",
        "--jobs=12,13_4",
        f"--Format={SQUEUE_FORMAT}",
    ]
    # Width 0: whole fields, however long a range of pending array tasks is.
    assert SQUEUE_FORMAT == "JobArrayID:0|,State:0|,exit_code:0|,Reason:0"


def test_sacct_argv() -> None:
    base = [
        "sacct",
        "--allocations",
        "--noheader",
        "--parsable2",
        "--jobs=7,8_1",
        "--format=JobID,State,ExitCode",
    ]
    assert sacct_argv(["7", "8_1"]) == base
    assert sacct_argv(("7", "8_1"), jobcomp=True) == [*base, "--completion"]


def test_scancel_and_scontrol_argv() -> None:
    assert scancel_argv(["5", "6_2"]) == ["scancel", "5", "6_2"]
    assert scancel_argv("5") == ["scancel", "5"]
    assert scontrol_config_argv() == ["scontrol", "show", "config"]


@pytest.mark.parametrize("bad", ["", "12;rm -rf ~", "-1", "12 13", "12_", "abc", "12.batch", "12_[1-3]"])
def test_job_ids_are_checked_before_they_reach_a_shell(bad: str) -> None:
    for build in (squeue_argv, sacct_argv, scancel_argv):
        with pytest.raises(ValueError, match="is not a Slurm job id"):
            build([bad])


def test_no_job_ids_is_an_error_not_every_job() -> None:
    for build in (squeue_argv, sacct_argv, scancel_argv):
        with pytest.raises(ValueError, match="No job ids"):
            build([])


def test_shell_join_leaves_plain_words_alone() -> None:
    assert (
        shell_join(["squeue", "--jobs=1,2", "--Format=JobArrayID:64"])
        == "squeue --jobs=1,2 --Format=JobArrayID:64"
    )
    assert shell_join(["sbatch", "/w/a b.sh"]) == "sbatch '/w/a b.sh'"


@settings(deadline=None)
@given(st.lists(st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"])), max_size=6))
def test_shell_join_survives_a_real_shell(argv: list[str]) -> None:
    command = shell_join(["printf", "%s\\0", "START", *argv])
    assert shlex.split(command)[3:] == argv
    result = subprocess.run(["bash", "-c", command], capture_output=True, check=True)
    assert result.stdout.decode().split("\0")[1:-1] == argv


def test_jobs_of_other_clusters_are_asked_and_cancelled_there() -> None:
    from slurmbatch.slurm.commands import array_task_id, scancel_commands, split_cluster

    assert split_cluster("123_4;c1") == ("123_4", "c1") and split_cluster("123") == ("123", None)
    assert array_task_id("123;c1", 4) == "123_4;c1" and array_task_id("123", 4) == "123_4"
    assert squeue_argv(["7;c1", "8_1;c1"])[:2] == ["squeue", "--clusters=c1"]
    assert "--jobs=7,8_1" in squeue_argv(["7;c1", "8_1;c1"])
    assert sacct_argv(["7;c1"])[:2] == ["sacct", "--clusters=c1"]
    assert scancel_argv(["7;c1"]) == ["scancel", "--clusters=c1", "7"]
    assert scancel_commands(["5", "7;c1", "6_2", "8;c2"]) == [
        ("xargs scancel", ["5", "6_2"]),
        ("xargs scancel --clusters=c1", ["7"]),
        ("xargs scancel --clusters=c2", ["8"]),
    ]
    with pytest.raises(ValueError, match="several clusters"):
        squeue_argv(["5", "7;c1"])
    with pytest.raises(ValueError, match="not a Slurm job id"):
        scancel_argv(["7;c1; rm -rf ~"])
