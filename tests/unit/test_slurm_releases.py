"""What each Slurm release prints, parsed: recorded output of 22.05 and 24.11 (tests/fixtures/slurm).

``tests/fixtures/slurm/record.py`` made these files on a local cluster of each release: the same jobs,
ending in each way the SDK tells apart. Every parser must read every release the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmbatch._probe import parse_probe
from slurmbatch.slurm.parse import parse_sacct, parse_scontrol_config, parse_squeue
from slurmbatch.slurm.states import JobState

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slurm"
RELEASES = ["22.05", "24.11"]


def recorded(release: str, name: str) -> str:
    return (FIXTURES / release / name).read_text()


def job_ids(release: str) -> dict[str, str]:
    """The kind of ending -> job id, as the recording submitted them."""
    return dict(line.split() for line in recorded(release, "jobs.txt").splitlines())


@pytest.mark.parametrize("release", RELEASES)
def test_squeue_states_and_exit_codes_read_alike(release: str) -> None:
    ids = job_ids(release)
    statuses = parse_squeue(recorded(release, "squeue.txt"))
    expected = {
        "completed": (JobState.COMPLETED, 0, 0),
        "failed": (JobState.FAILED, 3, 0),
        "signalled": (JobState.FAILED, 0, 9),
        "cancelled": (JobState.CANCELLED, 0, 0),
        "timeout": (JobState.TIMEOUT, 0, 15),
    }
    for kind, (state, code, signal) in expected.items():
        status = statuses[ids[kind]]
        assert (status.state, status.exit_code, status.signal) == (state, code, signal), (kind, status)
    for task in range(4):
        status = statuses[f"{ids['array']}_{task}"]
        assert status.exit_code == task
        assert status.state is (JobState.COMPLETED if task == 0 else JobState.FAILED)


@pytest.mark.parametrize("release", RELEASES)
def test_a_held_array_s_pending_range_names_every_task(release: str) -> None:
    held = job_ids(release)["held_array"]
    statuses = parse_squeue(recorded(release, "squeue.txt"))
    tasks = [job_id for job_id in statuses if job_id.startswith(f"{held}_")]
    assert len(tasks) == 1000
    assert all(statuses[t].state is JobState.PENDING and statuses[t].reason == "JobHeldUser" for t in tasks)


@pytest.mark.parametrize("release", RELEASES)
def test_sacct_completion_records_read_alike(release: str) -> None:
    ids = job_ids(release)
    statuses = parse_sacct(recorded(release, "sacct-completion.txt"))
    assert (statuses[ids["failed"]].state, statuses[ids["failed"]].exit_code) == (JobState.FAILED, 3)
    assert (statuses[ids["signalled"]].exit_code, statuses[ids["signalled"]].signal) == (0, 9)
    assert statuses[ids["timeout"]].state is JobState.TIMEOUT
    assert statuses[ids["cancelled"]].state is JobState.CANCELLED
    assert statuses[ids["completed"]].state is JobState.COMPLETED


@pytest.mark.parametrize("release", RELEASES)
def test_scontrol_show_config_gives_what_the_session_needs(release: str) -> None:
    config = parse_scontrol_config(recorded(release, "scontrol-show-config.txt"))
    assert config["SLURM_VERSION"].startswith(release)
    assert config["MaxArraySize"] == "1001"
    assert config["JobCompType"] == "jobcomp/filetxt"


@pytest.mark.parametrize("release", RELEASES)
def test_without_slurmdbd_no_release_reads_as_accounting(release: str) -> None:
    # 22.05 says accounting_storage/none, 24.11 says (null): neither has slurmdbd behind sacct.
    config_lines = [
        line
        for line in recorded(release, "scontrol-show-config.txt").splitlines()
        if line.startswith(("AccountingStorageType ", "MaxArraySize "))
    ]
    stdout = "\n".join(
        ["/w", "@@slurmbatch@@", "present", "@@slurmbatch@@", "3.11", "3.0.0", "@@slurmbatch@@"]
    )
    facts = parse_probe(0, stdout + "\n" + "\n".join(config_lines) + "\n", "", workdir="/w")
    assert facts.accounting is False
    assert facts.max_array_size == 1001


@pytest.mark.parametrize("release", RELEASES)
def test_squeue_of_an_unknown_job_is_an_invalid_job_id_error(release: str) -> None:
    from slurmbatch.slurm.parse import is_invalid_job_id_error

    text = recorded(release, "squeue-unknown-job.txt")
    assert text.startswith("exit=1")
    assert is_invalid_job_id_error(text)


@pytest.mark.parametrize("release", RELEASES)
def test_cluster_info_names_the_release_and_its_exit_code_form(release: str) -> None:
    from slurmbatch import ClusterInfo

    info = ClusterInfo.from_config(parse_scontrol_config(recorded(release, "scontrol-show-config.txt")))
    assert info.slurm_version.startswith(release) and info.tested
    assert info.exit_code_format == ("wait status" if release == "22.05" else "code:signal")
    assert info.accounting is False and info.max_array_size == 1001 and info.cluster_name


def test_an_untested_release_is_a_warning_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    from slurmbatch import ClusterInfo

    info = ClusterInfo.from_config(
        {"SLURM_VERSION": "25.05.1", "AccountingStorageType": "accounting_storage/slurmdbd"},
        sacct_answers=True,
    )
    assert info.accounting and not info.tested and info.release == (25, 5)
    with caplog.at_level("WARNING", logger="slurmbatch"):
        info.warn_if_untested("login.example.org")
    assert "Slurm 25.05.1" in caplog.text and "22.05 and 24.11" in caplog.text


def sbatch_errors(release: str) -> dict[str, tuple[int, str]]:
    """name -> (exit status, what sbatch printed), from the recorded sbatch-errors.txt."""
    blocks: dict[str, tuple[int, str]] = {}
    for block in recorded(release, "sbatch-errors.txt").split("### ")[1:]:
        head, _, text = block.partition("\n")
        name, status = head.split(" exit=")
        blocks[name] = (int(status), text.strip())
    return blocks


@pytest.mark.parametrize("release", RELEASES)
def test_sbatch_refusals_keep_sbatch_s_words_and_give_no_job_id(release: str) -> None:
    from slurmbatch.slurm.batch import SbatchReply

    for name, (status, text) in sbatch_errors(release).items():
        reply = SbatchReply("sb-token", status, text)
        if status == 0:
            # 22.05 accepts more CPUs than a node has (the job then pends forever); 24.11 refuses it.
            assert (release, name) == ("22.05", "too-many-cpus") and reply.job_id == text
            continue
        assert reply.job_id is None and not reply.maybe_submitted and not reply.controller_unreachable
        assert "sbatch: error:" in reply.output, name
