"""The doctor's verdicts from what each step found, the flags that become session options, and the
troubleshooting page's coverage of every error type. Pure: no cluster, no network."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
from click.testing import CliRunner

import slurmbatch._errors as errors
from slurmbatch import SlurmSession
from slurmbatch._job_script import LOCAL_CLOUDPICKLE, LOCAL_PYTHON
from slurmbatch.cli._diagnosis import (
    cluster_checks,
    connection_checks,
    failed,
    max_sessions_check,
    python_check,
    slurm_commands_check,
    workdir_check,
)
from slurmbatch.cli._session_options import session_kwargs, session_options
from slurmbatch.slurm.release import ClusterInfo
from slurmbatch.transport import ConnectSettings
from slurmbatch.transport._options import Target
from slurmbatch.transport.diagnosis import ConnectionDiagnosis, keyscan_line

TARGET = Target("login", "login.example.org", 2222, "me")
SETTINGS = ConnectSettings(host="login", known_hosts="/home/me/.ssh/known_hosts", ssh_config=())


def test_an_unresolvable_name_is_the_only_line() -> None:
    checks = connection_checks(
        ConnectionDiagnosis(TARGET, resolve_error="Name or service not known"), SETTINGS
    )
    assert [(c.name, c.verdict) for c in checks] == [("address", "fail")]
    assert "does not resolve" in checks[0].detail and failed(checks)


def test_a_closed_port_fails_after_the_address() -> None:
    diagnosis = ConnectionDiagnosis(TARGET, addresses=("10.0.0.1",), port_open=False, port_error="refused")
    checks = connection_checks(diagnosis, SETTINGS)
    assert [(c.name, c.verdict) for c in checks] == [("address", "ok"), ("port", "fail")]
    assert "ProxyJump" in checks[1].advice


def test_an_unknown_host_key_prints_the_keyscan_line() -> None:
    diagnosis = ConnectionDiagnosis(TARGET, addresses=("10.0.0.1",), port_open=True, host_key_known=False)
    checks = connection_checks(diagnosis, SETTINGS)
    assert checks[-1].name == "host key" and checks[-1].verdict == "fail"
    assert "ssh-keyscan -p 2222 login.example.org >> /home/me/.ssh/known_hosts" in checks[-1].advice


def test_keyscan_line_leaves_out_the_default_port() -> None:
    assert keyscan_line(Target("h", "h", 22, "u"), "kh") == "ssh-keyscan h >> kh"


def test_a_login_names_the_method_and_the_channels() -> None:
    diagnosis = ConnectionDiagnosis(
        TARGET,
        addresses=("10.0.0.1",),
        port_open=True,
        host_key_known=True,
        auth_method="publickey",
        max_sessions=10,
        connect_seconds=0.05,
    )
    checks = connection_checks(diagnosis, SETTINGS)
    assert [c.name for c in checks] == ["address", "port", "host key", "login", "MaxSessions"]
    assert "as me by publickey" in checks[3].detail
    assert not failed(checks)


def test_a_refused_login_fails_with_the_reason() -> None:
    diagnosis = ConnectionDiagnosis(
        TARGET, port_open=True, host_key_known=True, login_error="permission denied for me"
    )
    checks = connection_checks(diagnosis, SETTINGS)
    assert checks[-1].verdict == "fail" and checks[-1].detail == "permission denied for me"


def test_max_sessions_below_the_default_channels_says_what_to_pass() -> None:
    assert max_sessions_check(0).verdict == "fail"
    low = max_sessions_check(4)
    assert low.verdict == "warn" and "max_channels=2" in low.advice
    assert max_sessions_check(10).verdict == "ok"


def test_missing_slurm_commands_are_named() -> None:
    found = "/usr/bin/sbatch\nmissing squeue\n/usr/bin/sacct\nmissing scancel\n/usr/bin/scontrol\n"
    check = slurm_commands_check(found, had_setup=False)
    assert check.verdict == "fail" and "squeue, scancel" in check.detail and "--slurm-setup" in check.advice
    assert slurm_commands_check("/usr/bin/sbatch\n", had_setup=False).verdict == "ok"


def test_python_check_uses_the_sessions_rule() -> None:
    same = python_check(f"{LOCAL_PYTHON}\n{LOCAL_CLOUDPICKLE}\n", "python3")
    assert same.verdict == "ok" and LOCAL_PYTHON in same.detail
    other = python_check(f"2.7\n{LOCAL_CLOUDPICKLE}\n", "python3")
    assert other.verdict == "fail" and "same minor version" in other.detail
    missing = python_check(f"{LOCAL_PYTHON}\nModuleNotFoundError: No module named 'cloudpickle'\n", "py")
    assert missing.verdict == "fail" and "pip install" in missing.detail


def test_cluster_checks_read_cluster_info() -> None:
    accounting, array, release = cluster_checks(
        ClusterInfo(slurm_version="22.05.8", accounting=True, accounting_answers=True, max_array_size=500)
    )
    assert (accounting.verdict, array.verdict, release.verdict) == ("ok", "ok", "ok")
    assert array.detail.startswith("500")
    quiet, _, untested = cluster_checks(ClusterInfo(slurm_version="19.05.1", accounting_answers=False))
    assert quiet.verdict == "warn" and "MinJobAge" in quiet.advice
    records = cluster_checks(ClusterInfo(), jobcomp="jobcomp/filetxt")[0]
    assert records.verdict == "ok" and "completion records" in records.detail
    assert untested.verdict == "warn" and "19.05.1" in untested.detail


def test_workdir_free_space_from_df() -> None:
    line = "/dev/sda1 100000000 50000000 41943040 55% /home"
    assert workdir_check("/home/me/sb", line).detail == "/home/me/sb is writable, 40.0 GiB free"
    assert workdir_check("/w", "/dev/sda1 1 1 1024 99% /").verdict == "warn"
    assert workdir_check("/w", "garbled").verdict == "ok"


def test_the_flags_are_named_after_the_sessions_parameters() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @session_options
    def command(**params: object) -> None:
        seen.update(session_kwargs(dict(params)))

    result = CliRunner().invoke(
        command,
        ["--user", "me", "--port", "2222", "--key-file", "a", "--key-file", "b", "--no-verify-host-key"],
    )
    assert result.exit_code == 0, result.output
    assert seen == {"user": "me", "port": 2222, "key_file": ["a", "b"], "verify_host_key": False}
    parameters = inspect.signature(SlurmSession).parameters
    flags = {
        option.name
        for option in command.params
        if isinstance(option, click.Option) and option.name is not None
    }
    assert flags <= set(parameters), flags - set(parameters)


def test_troubleshooting_covers_every_error_type() -> None:
    page = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text()
    headings = set(re.findall(r"^## `(\w+)`$", page, flags=re.MULTILINE))
    types = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.SlurmBatchError)
    }
    assert types - {"SlurmBatchError"} <= headings, types - headings
