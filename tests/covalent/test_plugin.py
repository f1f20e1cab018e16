"""The executor as Covalent finds, configures, serializes and rebuilds it; no cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

ct = pytest.importorskip("covalent")

from covalent._shared_files.config import get_config  # noqa: E402
from covalent.executor import _executor_manager  # noqa: E402

import slurmbatch_covalent.slurm  # noqa: E402
from slurmbatch_covalent.slurm import EXECUTOR_PLUGIN_NAME, SlurmExecutor  # noqa: E402

pytestmark = pytest.mark.covalent


def test_registered_under_the_plugins_names() -> None:
    (entry,) = [ep for ep in entry_points(group="covalent.executor.executor_plugins") if ep.name == "slurm"]
    assert entry.value == "slurmbatch_covalent.slurm"
    assert EXECUTOR_PLUGIN_NAME == "SlurmExecutor"
    assert _executor_manager.executor_plugins_map["slurm"] is SlurmExecutor
    assert ct.executor.SlurmExecutor is SlurmExecutor
    assert SlurmExecutor(address="login").short_name() == "slurm"


def test_the_config_section_holds_the_defaults() -> None:
    section = get_config("executors.slurm")
    assert section["remote_workdir"] == "covalent-workdir"
    assert section["max_connections"] == 2
    assert "options" in section and "parsable" not in section["options"]


def test_executor_slurm_is_built_from_the_config_section() -> None:
    executor = _executor_manager.get_executor("slurm")
    assert isinstance(executor, SlurmExecutor)
    assert executor.remote_workdir == "covalent-workdir"


def test_attributes_survive_covalents_json_round_trip() -> None:
    executor = SlurmExecutor(
        address="login.cluster.org",
        username="me",
        options={"time": "01:00:00", "exclusive": ""},
        prerun_commands=["module load x"],
        port=2222,
        max_connections=1,
        log_stdout="out.log",
    )
    sent = json.loads(json.dumps(executor.to_dict()))  # raises if an attribute is not plain JSON
    rebuilt = SlurmExecutor().from_dict(sent)
    assert rebuilt._params() == executor._params()
    assert rebuilt.log_stdout == "out.log"


def test_explicit_arguments_win_over_the_config_even_when_falsy(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"address": "configured", "options": {"time": "01:00:00"}, "cleanup": True, "bashrc_path": "/x"}
    monkeypatch.setattr(slurmbatch_covalent.slurm, "_config_section", lambda: config)
    executor = SlurmExecutor(options={}, cleanup=False, bashrc_path="")
    assert (executor.address, executor.options, executor.cleanup, executor.bashrc_path) == (
        "configured",
        {},
        False,
        "",
    )


def test_nothing_connects_before_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Covalent builds instances several times per task; only run() may open the shared session.
    from slurmbatch_covalent import _shared

    SlurmExecutor(address="login.cluster.org")
    assert not any(_shared._SESSIONS.values())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_without_a_job_handle_or_job(anyio_backend: str) -> None:
    executor = SlurmExecutor(address="login.cluster.org")
    assert await executor.cancel({"dispatch_id": "d", "node_id": 0}, None) is False
    assert await executor.cancel({"dispatch_id": "d", "node_id": 0}, "12345") is False


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_run_without_an_address_says_so(anyio_backend: str) -> None:
    executor = SlurmExecutor()
    with pytest.raises(ValueError, match="needs an address"):
        await executor.run(sum, [[1]], {}, {"dispatch_id": "d", "node_id": 0, "results_dir": "/tmp"})


def test_installing_covalent_slurm_plugin_too_is_reported_loudly(tmp_path: Path) -> None:
    fake = tmp_path / "covalent_slurm_plugin"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    env: dict[str, Any] = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import slurmbatch_covalent.slurm"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning: covalent-slurm-plugin is installed next to slurmbatch[covalent]" in done.stderr
    assert "pip uninstall covalent-slurm-plugin" in done.stderr


def test_importing_the_plugin_before_covalent_still_registers_it() -> None:
    program = (
        "from slurmbatch_covalent.slurm import SlurmExecutor\n"
        "import covalent as ct\n"
        "assert ct.executor.SlurmExecutor is SlurmExecutor\n"
        "assert ct.executor._executor_manager.executor_plugins_map['slurm'] is SlurmExecutor\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "plugin class" not in done.stderr  # Covalent's warning about a half-imported plugin
