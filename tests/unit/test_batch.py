"""Many sbatch calls in one command: each job gets its own id or its own error."""

import secrets
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmbatch.slurm.batch import SbatchReply, batch_sbatch_command, parse_batch_sbatch, write_files_script

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
    assert SbatchReply("t", 0, "123;cluster").job_id == "123"
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
