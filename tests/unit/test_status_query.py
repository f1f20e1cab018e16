"""The status query's script and the reading of its framed reply.

The script runs here under a real ``sh`` with stand-in squeue and sacct first on PATH, which print what
they were asked (or fail), so the framing is tested as the login node runs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slurmbatch.slurm.states import JobState
from slurmbatch.slurm.status import (
    CHUNK_CHARS,
    StatusAsk,
    parse_status_reply,
    status_asks,
    status_data,
    status_script,
)


def row(job_id: str, state: str, reason: str = "None") -> str:
    # As SQUEUE_FORMAT prints it: each field whole, ended by "|", the reason last.
    return f"{job_id}|{state}|0|{reason}"


def stand_ins(tmp_path: Path, squeue: str, sacct: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("squeue", squeue), ("sacct", sacct)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def run_query_with_data(env: dict[str, str], asks: list[StatusAsk]) -> str:
    # The ids on the body's own standard input, as pool.script passes data=.
    script = Path(env["PATH"].split(":")[0]) / "query.sh"
    script.write_text(status_script(jobcomp=True) + "\n")
    done = subprocess.run(
        ["sh", str(script)], input=status_data(asks), capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_failing_sacct_keeps_squeues_rows(tmp_path: Path) -> None:
    env = stand_ins(
        tmp_path,
        squeue=f'echo "{row("11", "COMPLETED")}"; echo "{row("12", "RUNNING")}"',
        sacct='echo "sacct: error: Problem talking to the database: Connection refused" >&2; exit 1',
    )
    asks = status_asks(["11", "12"], ["9"])
    answer = parse_status_reply(run_query_with_data(env, asks), asks)
    assert answer.statuses["11"].state is JobState.COMPLETED
    assert answer.statuses["12"].state is JobState.RUNNING
    assert answer.answered("squeue", "11") and not answer.answered("sacct", "9")


def test_the_commands_get_the_ids_and_not_the_scripts_input(tmp_path: Path) -> None:
    # Each command prints its arguments and then whatever it can read: the rest of the id list must
    # not be swallowed by the first command.
    env = stand_ins(tmp_path, squeue='echo "$*" | tr " " "\\n" | grep -- --jobs; cat', sacct='echo "$*"; cat')
    asks = [StatusAsk("squeue", None, ("1", "2")), StatusAsk("sacct", "c1", ("3;c1",))]
    reply = run_query_with_data(env, asks)
    assert "--jobs=1,2" in reply
    assert "--clusters=c1" in reply and "--jobs=3" in reply
    assert "@@sb-rc 0" in reply.split("@@sb-out 1")[1]  # the second command ran too


def test_squeue_knowing_none_of_the_ids_is_an_answer_and_any_other_failure_is_not(tmp_path: Path) -> None:
    asks = status_asks(["5"], [])
    purged = stand_ins(tmp_path, 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1', "true")
    answer = parse_status_reply(run_query_with_data(purged, asks), asks)
    assert answer.statuses == {} and answer.unanswered == ()
    (tmp_path / "bin").rename(tmp_path / "old")
    missing = stand_ins(tmp_path, "exit 127", "true")  # e.g. the command is not there
    answer = parse_status_reply(run_query_with_data(missing, asks), asks)
    assert answer.unanswered == tuple(asks)


@pytest.mark.parametrize(
    "stdout",
    [
        "",  # the shell died before it printed anything
        "@@sb-out 0\n5|RUNNING|0|None\n",  # ... or in the middle of a frame
        "@@sb-out 0\n5|RUNNING|0|None\n@@sb-err\n",
    ],
)
def test_a_frame_cut_short_is_no_answer(stdout: str) -> None:
    asks = status_asks(["5"], [])
    answer = parse_status_reply(stdout, asks)
    assert answer.statuses == {} and answer.unanswered == tuple(asks)


def test_ids_of_other_clusters_are_asked_there_and_keep_their_cluster() -> None:
    asks = status_asks(["7;c2", "5", "6_1;c2"], [])
    assert [(a.cluster, a.ids) for a in asks] == [(None, ("5",)), ("c2", ("6_1;c2", "7;c2"))]
    assert status_data(asks) == "squeue - 5\nsqueue c2 6_1,7\n"
    reply = (
        "@@sb-out 0\n5|RUNNING|0|None\n@@sb-err\n\n@@sb-rc 0\n"
        "@@sb-out 1\nCLUSTER: c2\n6_1|COMPLETED|0|None\n7|PENDING|0|Priority\n@@sb-err\n\n@@sb-rc 0\n"
    )
    answer = parse_status_reply(reply, asks)
    assert sorted(answer.statuses) == ["5", "6_1;c2", "7;c2"]
    assert answer.statuses["7;c2"].reason == "Priority"


def test_long_id_lists_are_split_into_chunks_below_the_argument_limit() -> None:
    ids = [str(10_000_000 + i) for i in range(20_000)]  # 180 KB of ids: over Linux's 128 KiB per argument
    asks = status_asks(ids, [])
    assert len(asks) > 1
    assert all(len(a.data_line()) < CHUNK_CHARS + 20 for a in asks)
    assert sorted(i for a in asks for i in a.ids) == sorted(ids)


def test_pending_ranges_cut_short_are_flagged_not_taken_for_gone() -> None:
    # Recorded from squeue 22.05: without SLURM_BITSTR_LEN=0 the range is cut at 32 characters; with a
    # fixed column width, at the width.
    asks = status_asks(["460"], [])
    for cut in ("460_[0-2,4-6,8,10,12,14,16,18,2", "460_[0-2,4-6,8,10,12,14,16,18,20,22,24...]"):
        answer = parse_status_reply(f"@@sb-out 0\n{row(cut, 'PENDING')}\n@@sb-err\n\n@@sb-rc 0\n", asks)
        assert answer.cut_short == {"460"}
    whole = "460_[0-2,4-6,8,10,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40-300%8]"
    answer = parse_status_reply(f"@@sb-out 0\n{row(whole, 'PENDING')}\n@@sb-err\n\n@@sb-rc 0\n", asks)
    assert answer.cut_short == set()
    assert len(answer.statuses) == 3 + 3 + 16 + 261
    assert "460_300" in answer.statuses and "460_3" not in answer.statuses


def test_the_script_asks_for_whole_pending_ranges() -> None:
    assert "export SLURM_BITSTR_LEN=0" in status_script(jobcomp=False)
