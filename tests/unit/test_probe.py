"""The session's first remote command: built, then parsed into facts or plain-words errors."""

import os
import subprocess
from pathlib import Path

import pytest

from slurmbatch import RemoteEnvironmentError
from slurmbatch._probe import parse_probe, probe_command, python_check, python_command, workdir_assignment


def run_probe(tmp_path: Path, workdir: str, python: str | None) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    scontrol = fake_bin / "scontrol"
    scontrol.write_text(
        "#!/bin/sh\necho 'MaxArraySize            = 77'\necho 'MinJobAge               = 300 sec'\n"
    )
    scontrol.chmod(0o755)
    command = probe_command(workdir, python=python, runner_name="runner-abc.py")
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )


def test_probe_creates_a_private_workdir_and_reads_the_config(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "~/work dir", python=None)
    facts = parse_probe(done.returncode, done.stdout, done.stderr, workdir="~/work dir")
    assert facts.workdir == str(tmp_path / "work dir")
    assert oct((tmp_path / "work dir").stat().st_mode & 0o777) == "0o700"
    assert {p.name for p in (tmp_path / "work dir").iterdir()} == {"fn", "jobs", "results"}
    assert facts.runner_present is False
    assert facts.max_array_size == 77
    assert facts.accounting is False
    assert facts.python_report == "unchecked"


def test_unwritable_workdir_is_a_plain_error(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "/proc/not-here", python=None)
    with pytest.raises(RemoteEnvironmentError, match=r"'/proc/not-here'.*Pass remote_workdir="):
        parse_probe(done.returncode, done.stdout, done.stderr, workdir="/proc/not-here")


def test_python_report_is_checked_against_the_client() -> None:
    python_check("3.11\n3.1.3", python="python3", local_python="3.11", local_cloudpickle="3.0.0")
    with pytest.raises(RemoteEnvironmentError, match=r"is 3\.10, but this client runs Python 3\.11"):
        python_check("3.10\n3.1.3", python="python3", local_python="3.11", local_cloudpickle="3.1.3")
    with pytest.raises(RemoteEnvironmentError, match=r"cloudpickle is not importable.*pip install --user"):
        python_check(
            "3.11\nModuleNotFoundError: No module named 'cloudpickle'",
            python="python3",
            local_python="3.11",
            local_cloudpickle="3.1.3",
        )
    with pytest.raises(RemoteEnvironmentError, match=r"could not run.*command not found"):
        python_check(
            "bash: line 1: py9: command not found\nexit status 127",
            python="py9",
            local_python="3.11",
            local_cloudpickle="3.1.3",
        )


def test_python_setting_may_carry_arguments() -> None:
    assert python_command("/usr/bin/env python3") == ["/usr/bin/env", "python3"]
    with pytest.raises(ValueError, match="python must name an interpreter"):
        python_command("  ")


def test_an_import_error_printed_before_the_version_still_names_cloudpickle() -> None:
    # stderr shares the pipe with stdout, so the traceback may arrive before the version line.
    report = (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 1, in <module>\n'
        "ModuleNotFoundError: No module named 'cloudpickle'\n"
        "3.11\n"
        "exit status 1"
    )
    with pytest.raises(
        RemoteEnvironmentError, match=r"not importable .*\(ModuleNotFoundError: No module named"
    ):
        python_check(report, python="python3", local_python="3.11", local_cloudpickle="3.1.3")


def _expanded(workdir: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the work directory's assignment lines under /bin/sh; print what $W became."""
    script = "\n".join([*workdir_assignment(workdir), 'printf %s "$W"'])
    return subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}
    )


@pytest.mark.parametrize(
    ("workdir", "expected"),
    [
        ("$SCRATCH/sb", "/scratch/me/sb"),
        ("${SCRATCH}/a b/c", "/scratch/me/a b/c"),
        ("$SCRATCH", "/scratch/me"),
        ("~root/sb", f"{os.path.expanduser('~root')}/sb"),
        ("~/sb", "sb"),  # commands start in the home directory
        ("/abs/$SCRATCH/x", "/abs/$SCRATCH/x"),  # only a leading variable is expanded
        ("/tmp/it's", "/tmp/it's"),
    ],
)
def test_workdir_forms_are_expanded_by_the_login_node_shell(workdir: str, expected: str) -> None:
    done = _expanded(workdir, SCRATCH="/scratch/me")
    assert (done.returncode, done.stdout) == (0, expected), done.stderr


def test_an_unset_workdir_variable_or_unknown_user_stops_the_probe_plainly() -> None:
    unset = _expanded("$SCRATCH/sb")
    assert unset.returncode == 3 and "$SCRATCH, which is not set" in unset.stderr
    nobody = _expanded("~no-such-user-sb/x")
    assert nobody.returncode == 3 and "knows no user no-such-user-sb" in nobody.stderr
    with pytest.raises(RemoteEnvironmentError, match=r"\$SCRATCH, which is not set"):
        parse_probe(unset.returncode, unset.stdout, unset.stderr, workdir="$SCRATCH/sb")
