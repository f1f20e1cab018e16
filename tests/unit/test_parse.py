"""Parsers of sbatch, squeue, sacct and scontrol output, on output shaped like Slurm 22.05 prints it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurmbatch._errors import SubmissionError
from slurmbatch.slurm import (
    JobState,
    JobStatus,
    expand_job_id,
    is_invalid_job_id_error,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_config,
    parse_squeue,
)


def squeue_line(job_id: str, state: str, wait_status: int) -> str:
    """One line as ``--Format=JobArrayID:64,State:24,exit_code:12`` pads it."""
    return f"{job_id:<64}{state:<24}{wait_status!s:<12}"


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("123\n", "123"), ("4567;cluster2\n", "4567"), ("  89  \n", "89"), ("warning: x\n90\n", "90")],
)
def test_parse_sbatch(stdout: str, job_id: str) -> None:
    assert parse_sbatch(stdout) == job_id


def test_parse_sbatch_without_an_id_carries_sbatchs_words() -> None:
    stderr = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination"
    with pytest.raises(SubmissionError, match="Invalid account") as caught:
        parse_sbatch("", stderr=stderr)
    assert caught.value.sbatch_stderr == stderr
    with pytest.raises(SubmissionError, match="said: nothing"):
        parse_sbatch("\n")


def test_parse_squeue_reads_padded_columns_and_wait_statuses() -> None:
    stdout = "\n".join(
        [
            squeue_line("123", "COMPLETED", 0),
            squeue_line("124_0", "FAILED", 256),  # exit(1)
            squeue_line("124_1", "FAILED", 9),  # killed by SIGKILL
            squeue_line("124_2", "RUNNING", 0),
            squeue_line("124_3", "PENDING", 0),
            squeue_line("125", "CANCELLED", 15),
            squeue_line("126", "TIMEOUT", 0),
            squeue_line("127", "OUT_OF_MEMORY", 0x8900),  # exit 137
            squeue_line("128", "COMPLETING", 0),
            squeue_line("129", "PENDING", -2),  # Slurm's "no value"
            "",
        ]
    )
    statuses = parse_squeue(stdout)
    assert statuses["123"] == JobStatus(JobState.COMPLETED, 0, 0, "COMPLETED")
    assert statuses["124_0"] == JobStatus(JobState.FAILED, 1, 0, "FAILED")
    assert statuses["124_1"] == JobStatus(JobState.FAILED, 0, 9, "FAILED")
    assert statuses["124_2"].state is JobState.RUNNING and not statuses["124_2"].is_terminal
    assert statuses["124_3"].state is JobState.PENDING
    assert statuses["125"].state is JobState.CANCELLED and statuses["125"].signal == 15
    assert statuses["126"].state is JobState.TIMEOUT and statuses["126"].is_terminal
    assert statuses["127"] == JobStatus(JobState.OUT_OF_MEMORY, 137, 0, "OUT_OF_MEMORY")
    assert statuses["128"].state is JobState.COMPLETING and not statuses["128"].is_terminal
    assert statuses["129"] == JobStatus(JobState.PENDING, None, None, "PENDING")
    assert len(statuses) == 10


# Captured from Slurm 22.05.8 (trailing spaces kept): an array 30 of tasks exiting with their index, a job
# killed by SIGKILL (31), one exiting 3 (32), one cancelled while running (33), one past its time limit (34).
SQUEUE_22_05 = (
    "33                                                              CANCELLED               15          \n"
    "30_0                                                            COMPLETED               0           \n"
    "31                                                              FAILED                  9           \n"
    "32                                                              FAILED                  768         \n"
    "30_5                                                            FAILED                  1280        \n"
    "30_1                                                            FAILED                  256         \n"
    "34                                                              TIMEOUT                 15          \n"
)
# The same jobs in sacct --completion (jobcomp/filetxt): array tasks appear under their own numeric ids
# (35 is 30_0, 36 is 30_1), and the array's id under its last task.
SACCT_JOBCOMP_22_05 = (
    "32|FAILED|3:0\n31|FAILED|0:9\n33|CANCELLED|0:0\n35|COMPLETED|0:0\n36|FAILED|1:0\n34|TIMEOUT|0:0\n"
)


def test_parse_squeue_on_real_output() -> None:
    statuses = parse_squeue(SQUEUE_22_05)
    assert statuses == {
        "33": JobStatus(JobState.CANCELLED, 0, 15, "CANCELLED"),
        "30_0": JobStatus(JobState.COMPLETED, 0, 0, "COMPLETED"),
        "31": JobStatus(JobState.FAILED, 0, 9, "FAILED"),
        "32": JobStatus(JobState.FAILED, 3, 0, "FAILED"),
        "30_5": JobStatus(JobState.FAILED, 5, 0, "FAILED"),
        "30_1": JobStatus(JobState.FAILED, 1, 0, "FAILED"),
        "34": JobStatus(JobState.TIMEOUT, 0, 15, "TIMEOUT"),
    }


def test_parse_sacct_on_real_jobcomp_output() -> None:
    statuses = parse_sacct(SACCT_JOBCOMP_22_05)
    assert statuses["32"] == JobStatus(JobState.FAILED, 3, 0, "FAILED")
    assert statuses["31"] == JobStatus(JobState.FAILED, 0, 9, "FAILED")
    assert statuses["33"].state is JobState.CANCELLED
    assert statuses["34"] == JobStatus(JobState.TIMEOUT, 0, 0, "TIMEOUT")
    assert statuses["36"].exit_code == 1


def test_parse_squeue_expands_pending_array_ranges() -> None:
    statuses = parse_squeue(squeue_line("200_[3-5,8%2]", "PENDING", 0) + "\n")
    assert sorted(statuses) == ["200_3", "200_4", "200_5", "200_8"]
    assert all(status.state is JobState.PENDING for status in statuses.values())


def test_parse_squeue_accepts_pipe_delimited_columns_and_state_suffixes() -> None:
    statuses = parse_squeue("  300 | CANCELLED by 0 | 15 |\n301|RUNNING\n")
    assert statuses["300"] == JobStatus(JobState.CANCELLED, 0, 15, "CANCELLED by 0")
    assert statuses["301"] == JobStatus(JobState.RUNNING, None, None, "RUNNING")


def test_parse_squeue_skips_lines_that_are_not_about_a_job() -> None:
    stdout = "\n   \nslurm_load_jobs error: Socket timed out\n" + squeue_line("5", "RUNNING", 0)
    assert list(parse_squeue(stdout)) == ["5"]


def test_parse_sacct() -> None:
    stdout = "\n".join(
        [
            "123|COMPLETED|0:0",
            "124_0|FAILED|1:0",
            "124_[5-7]|PENDING|0:0",
            "125|CANCELLED by 1000|0:15",
            "126|TIMEOUT|0:0",
            "127|OUT_OF_MEMORY|0:125",
            "128|NODE_FAIL|1:0",
            "129|PREEMPTED|0:0",
            "130.batch|FAILED|2:0",
            "131|RUNNING|",
            "",
        ]
    )
    statuses = parse_sacct(stdout)
    assert statuses["123"] == JobStatus(JobState.COMPLETED, 0, 0, "COMPLETED")
    assert statuses["124_0"] == JobStatus(JobState.FAILED, 1, 0, "FAILED")
    assert [statuses[f"124_{task}"].state for task in (5, 6, 7)] == [JobState.PENDING] * 3
    assert statuses["125"] == JobStatus(JobState.CANCELLED, 0, 15, "CANCELLED by 1000")
    assert statuses["126"].state is JobState.TIMEOUT
    assert statuses["127"] == JobStatus(JobState.OUT_OF_MEMORY, 0, 125, "OUT_OF_MEMORY")
    assert statuses["128"].state is JobState.NODE_FAIL
    assert statuses["129"].state is JobState.PREEMPTED
    assert "130.batch" not in statuses and "130" not in statuses
    assert statuses["131"] == JobStatus(JobState.RUNNING, None, None, "RUNNING")


def test_parse_sacct_last_record_of_a_job_wins() -> None:
    statuses = parse_sacct("140|NODE_FAIL|0:0\n140|COMPLETED|0:0\n")
    assert statuses["140"].state is JobState.COMPLETED


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("123", ["123"]),
        ("123_4", ["123_4"]),
        ("123+1", ["123+1"]),
        ("123_[1-3]", ["123_1", "123_2", "123_3"]),
        ("123_[1,4-5%2]", ["123_1", "123_4", "123_5"]),
        ("123_[1-2,7,9...]", ["123_1", "123_2", "123_7"]),  # cut short by SLURM_BITSTR_LEN
        ("123_[1-2,4", ["123_1", "123_2", "123_4"]),
        ("JOBID", []),
        ("", []),
    ],
)
def test_expand_job_id(text: str, ids: list[str]) -> None:
    assert expand_job_id(text) == ids


@given(base=st.integers(1, 10**9), tasks=st.sets(st.integers(0, 5000), min_size=1, max_size=30))
def test_expand_job_id_inverts_slurms_range_notation(base: int, tasks: set[int]) -> None:
    ordered = sorted(tasks)
    runs: list[list[int]] = []
    for task in ordered:
        if runs and task == runs[-1][-1] + 1:
            runs[-1].append(task)
        else:
            runs.append([task])
    text = ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    assert expand_job_id(f"{base}_[{text}]") == [f"{base}_{task}" for task in ordered]


def test_parse_scontrol_config() -> None:
    stdout = """Configuration data as of 2026-11-26T12:00:00
AccountingStorageType   = accounting_storage/none
JobCompType             = jobcomp/filetxt
MaxArraySize            = 1001
MinJobAge               = 300 sec
SchedulerParameters     = batch_sched_delay=0,sched_min_interval=0
SLURM_VERSION           = 22.05.8
SuspendExcNodes         = (null)

Cgroup Support Configuration:
AllowedRAMSpace         = 100.0%

Slurmctld(primary) at localhost is UP
"""
    config = parse_scontrol_config(stdout)
    assert config["MinJobAge"] == "300 sec"
    assert config["MaxArraySize"] == "1001"
    assert config["SchedulerParameters"] == "batch_sched_delay=0,sched_min_interval=0"
    assert config["SLURM_VERSION"] == "22.05.8"
    assert config["AllowedRAMSpace"] == "100.0%"
    assert config["SuspendExcNodes"] == "(null)"
    assert not any(key.startswith(("Configuration", "Slurmctld", "Cgroup")) for key in config)


def test_is_invalid_job_id_error() -> None:
    assert is_invalid_job_id_error("slurm_load_jobs error: Invalid job id specified\n")
    assert not is_invalid_job_id_error("slurm_load_jobs error: Socket timed out on send/recv operation")


def test_squeue_reasons_with_spaces_and_the_ones_that_never_clear() -> None:
    # As SQUEUE_FORMAT prints it: padded columns, each ended by "|", the reason last and padded.
    text = (
        f"{'7':<64}|{'PENDING':<24}|{'0':<12}|{'PartitionTimeLimit':<200}\n"
        f"{'8_[0-2]':<64}|{'PENDING':<24}|{'0':<12}|{'(ReqNodeNotAvail, UnavailableNodes:n1)':<200}\n"
        f"{'9':<64}|{'RUNNING':<24}|{'0':<12}|{'None':<200}\n"
    )
    statuses = parse_squeue(text)
    assert statuses["7"].reason == "PartitionTimeLimit" and statuses["7"].never_starts
    assert statuses["8_1"].reason == "(ReqNodeNotAvail, UnavailableNodes:n1)"
    assert not statuses["8_1"].never_starts  # a node may come back
    assert statuses["9"].state is JobState.RUNNING and not statuses["9"].never_starts
