"""The migration guide (docs/covalent.md): its two examples give the scripts it shows."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from slurmbatch.slurm import render_script
from slurmbatch_covalent.params import job_spec, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

pytestmark = pytest.mark.covalent

GUIDE = Path(__file__).parents[2] / "docs" / "covalent.md"
HEADING = "# Migrating from covalent-slurm-plugin"
RUN = [
    "python3",
    "/scratch/user/experiment1/runner-0123456789ab.py",
    "run",
    "fn.pkl",
    "args.pkl",
    "result.pkl",
]


def migration_section(text: str) -> str:
    """The guide's text, from its heading to the next heading of the same level."""
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return text[start : end if end != -1 else None]


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def rendered(params: dict[str, Any]) -> str:
    return render_script(job_spec(params, dispatch_id="d", node_id=0), run_argv=RUN)


def check_guide(section: str) -> None:
    """Assert that the guide's config section and executor give the preamble and commands it shows."""
    (config,) = blocks(section, "toml")
    _, preamble, commands = blocks(section, "bash")
    from_config = rendered(resolve({}, tomllib.loads(config)["executors"]["slurm"]))
    assert from_config.startswith(preamble), from_config
    assert "\nsrun --cpu_bind=cores --gpus=4 --gpu-bind=single:1 \\\n" in from_config

    (example,) = blocks(section, "py")
    call = example.split("\n\n@ct.electron")[0]  # the executor, without the electron
    arguments = call.split("ct.executor.SlurmExecutor(", 1)[1].rsplit(")", 1)[0]
    given = eval(f"dict({arguments})")  # the example's own keyword arguments
    from_instance = rendered(resolve({"address": "login.cluster.org", **given}, {}))
    expected = commands.replace("python3 /scratch/user/experiment1/runner-<hash>.py run ...", " ".join(RUN))
    assert expected in from_instance, from_instance


def test_the_migration_guide_shows_what_its_examples_give() -> None:
    text = GUIDE.read_text()
    assert HEADING in text, f"{GUIDE} lost its heading"
    check_guide(migration_section(text))
