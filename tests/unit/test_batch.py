"""Many sbatch calls in one command: each job gets its own id or its own error."""

import secrets
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmbatch.slurm.batch import (
    FENCED,
    NOT_STARTED,
    SESSION_VARIABLES,
    UNFINISHED,
    WRITE_FAILED,
    SbatchReply,
    batch_sbatch_command,
    fence_recovery_command,
    fenced_script,
    lookup_command,
    parse_batch_sbatch,
    parse_lookup,
    write_files_script,
)

FAKE_SBATCH = """#!/bin/sh
# Refuses scripts whose name contains "bad", with a two-line message like sbatch's own.
case "$2" in
  *bad*) echo "sbatch: error: Batch job submission failed:" >&2; echo "Invalid partition" >&2; exit 1 ;;
esac
echo "$(( $(cat "$(dirname "$0")/counter") + 1 ))" > "$(dirname "$0")/counter"
cat "$(dirname "$0")/counter"
"""


def run_with_fake_sbatch(tmp_path: Path, command: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "counter").write_text("100\n")
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        check=True,
    )
    return done.stdout


def test_every_job_reports_its_own_id_or_error(tmp_path: Path) -> None:
    jobs = [("sb-a", "/w/a.sh"), ("sb-bad", "/w/bad.sh"), ("sb-c", "/w/dir with space/c.sh")]
    replies = parse_batch_sbatch(run_with_fake_sbatch(tmp_path, batch_sbatch_command(jobs, lanes=1)))
    assert set(replies) == {"sb-a", "sb-bad", "sb-c"}
    assert replies["sb-a"].job_id == "101"
    assert replies["sb-c"].job_id == "102"
    assert replies["sb-bad"].job_id is None
    assert replies["sb-bad"].output == "sbatch: error: Batch job submission failed:\nInvalid partition"


def test_lanes_run_every_job_once(tmp_path: Path) -> None:
    jobs = [(f"sb-{i}", f"/w/{i}.sh") for i in range(20)]
    command = batch_sbatch_command(jobs, lanes=8)
    assert command.count(") &") == 8
    replies = parse_batch_sbatch(run_with_fake_sbatch(tmp_path, command))
    assert sorted(replies) == sorted(token for token, _ in jobs)
    assert all(reply.exit_status == 0 for reply in replies.values())


def test_parsable_output_with_cluster_name() -> None:
    assert SbatchReply("t", 0, "123;cluster").job_id == "123;cluster"  # asked and cancelled there
    assert SbatchReply("t", 0, "sbatch: warning: something\n456").job_id == "456"
    assert SbatchReply("t", 1, "123").job_id is None


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one job"):
        batch_sbatch_command([])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_files_written_by_the_script_hold_exactly_their_bytes(tmp_path: Path, contents: list[bytes]) -> None:
    directory = tmp_path / secrets.token_hex(4)
    directory.mkdir()
    files = {str(directory / f"it's file {i}.pkl"): data for i, data in enumerate(contents)}
    subprocess.run(["bash", "-c", write_files_script(files)], check=True, env={"PATH": "/usr/bin:/bin"})
    for path, data in files.items():
        assert Path(path).read_bytes() == data
        assert Path(path).stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------------------ fenced batches
def fenced(tmp_path: Path, jobs: list[tuple[str, str]]) -> tuple[str, str]:
    fence = str(tmp_path / "sb-batch.batch")
    return fence, fenced_script(batch_sbatch_command(jobs, lanes=2, fence=fence), fence)


def run_bash(command: str, bin_dir: Path, stdin: str = "") -> str:
    done = subprocess.run(
        ["bash", "-s"],
        input=stdin or command,
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        check=True,
    )
    return done.stdout


def test_a_fenced_batch_leaves_its_replies_for_a_recovery(tmp_path: Path) -> None:
    jobs = [("sb-a", "/w/a.sh"), ("sb-bad", "/w/bad.sh"), ("sb-c", "/w/c.sh")]
    fence, script = fenced(tmp_path, jobs)
    first = parse_batch_sbatch(run_with_fake_sbatch(tmp_path, script))
    recovered = run_bash(fence_recovery_command(fence), tmp_path / "bin")
    assert UNFINISHED not in recovered and NOT_STARTED not in recovered
    assert parse_batch_sbatch(recovered) == first
    assert {t for t, r in first.items() if r.job_id} == {"sb-a", "sb-c"}


def test_a_batch_runs_at_most_once(tmp_path: Path) -> None:
    _, script = fenced(tmp_path, [("sb-a", "/w/a.sh")])
    run_with_fake_sbatch(tmp_path, script)
    again = run_bash(script, tmp_path / "bin")
    assert FENCED in again and "sb-a" not in again
    assert (tmp_path / "bin" / "counter").read_text().strip() == "101"  # sbatch ran once


def test_a_recovery_that_comes_first_stops_the_batch_for_good(tmp_path: Path) -> None:
    fence, script = fenced(tmp_path, [("sb-a", "/w/a.sh")])
    bin_dir = tmp_path / "bin"
    run_with_fake_sbatch(tmp_path, "true")  # installs the fake sbatch
    assert NOT_STARTED in run_bash(fence_recovery_command(fence), bin_dir)
    assert FENCED in run_bash(script, bin_dir)  # the lost command arriving late does nothing
    assert (bin_dir / "counter").read_text().strip() == "100"


def test_a_truncated_batch_runs_nothing(tmp_path: Path) -> None:
    fence, script = fenced(tmp_path, [("sb-a", "/w/a.sh"), ("sb-c", "/w/c.sh")])
    run_with_fake_sbatch(tmp_path, "true")
    cut = script[: script.index("wait")]  # the connection dropped while the script was being sent
    subprocess.run(["bash", "-s"], input=cut, capture_output=True, text=True, check=False)
    assert not Path(fence).exists()
    assert (tmp_path / "bin" / "counter").read_text().strip() == "100"


def test_a_batch_that_never_ended_is_reported_unfinished(tmp_path: Path) -> None:
    fence = tmp_path / "sb-x.batch"
    fence.mkdir()
    (fence / "replies").write_text("sb-a 0 101\n")
    out = run_bash(fence_recovery_command(str(fence), wait_seconds=1), tmp_path)
    assert UNFINISHED in out
    assert parse_batch_sbatch(out)["sb-a"].job_id == "101"


def test_a_file_that_cannot_be_written_stops_the_command_before_sbatch(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.sh", tmp_path / "missing" / "b.sh"
    script = write_files_script({str(good): b"x", str(bad): b"y"}) + "\necho sbatch-ran"
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == WRITE_FAILED
    assert "sbatch-ran" not in done.stdout
    assert f"could not write {bad} on the login node, so no job was submitted" in done.stderr
    assert "No such file or directory" in done.stderr


def test_a_batch_that_stops_early_still_marks_its_end(tmp_path: Path) -> None:
    fence = str(tmp_path / "dir with space" / "sb-y.batch")
    (tmp_path / "dir with space").mkdir()
    script = fenced_script("echo partial; exit 75", fence)
    subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=False)
    out = run_bash(fence_recovery_command(fence, wait_seconds=1), tmp_path)
    assert UNFINISHED not in out and NOT_STARTED not in out


def test_site_notices_around_the_id_are_not_taken_for_it() -> None:
    # What sbatch prints at sites that add notices (recorded through the wrapper sbatch's noisy mode).
    output = "25 nodes are down for maintenance until Friday\n4711\n2 GPUs per user only, please"
    assert SbatchReply("t", 0, output).job_id == "4711"
    assert SbatchReply("t", 0, "Welcome!\n4712;gpu-cluster\nBye").job_id == "4712;gpu-cluster"
    assert SbatchReply("t", 0, "25 nodes are down").job_id is None


@pytest.mark.parametrize(
    ("output", "maybe", "unreachable"),
    [
        ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", True, False),
        ("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received", True, False),
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
            False,
            True,
        ),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", False, False),
    ],
)
def test_errors_that_may_have_created_the_job_are_told_apart(
    output: str, maybe: bool, unreachable: bool
) -> None:
    reply = SbatchReply("t", 1, output)
    assert (reply.maybe_submitted, reply.controller_unreachable) == (maybe, unreachable)


def test_lost_answers_are_found_by_token_in_squeues_comments() -> None:
    # squeue --me -h -t all -O 'Comment:0|,ArrayJobID:0|' on 22.05: a running array task and a pending
    # range of the same array share its comment and its own id.
    stdout = "sb-aaaa|501|\nsb-bbbb|502|\nsb-bbbb|502|\n(null)|503|\nsb-cccc|\n"
    assert parse_lookup(stdout, ["sb-bbbb", "sb-aaaa", "sb-zzzz"]) == {"sb-aaaa": "501", "sb-bbbb": "502"}
    assert "--me" in lookup_command() and "Comment:0" in lookup_command()


def test_sbatch_variables_the_session_relies_on_are_unset_for_its_calls(tmp_path: Path) -> None:
    command = "export SBATCH_OUTPUT=/tmp/elsewhere SBATCH_ARRAY_INX=0-3 SBATCH_PARTITION=p\n"
    command += 'sbatch() { echo "${SBATCH_OUTPUT:-none} ${SBATCH_ARRAY_INX:-none} $SBATCH_PARTITION" >&2; echo 9; }\n'
    command += batch_sbatch_command([("sb-a", "/w/a.sh")], lanes=1)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    assert parse_batch_sbatch(done.stdout)["sb-a"].output == "none none p\n9"
    assert set(SESSION_VARIABLES) >= {"SBATCH_OUTPUT", "SBATCH_ERROR", "SBATCH_ARRAY_INX", "SBATCH_EXPORT"}
