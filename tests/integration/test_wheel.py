"""The built wheel, installed into a fresh venv away from the source tree, runs the demo and ``doctor``.

Nothing of the source tree is on the path there: the venv's Python runs from a temporary directory
with only the wheel's files importable, so a module or data file the wheel forgot fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slurmbatch.testing import ClusterSettings, LocalCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).parents[2]


def run(
    *argv: str | Path, cwd: Path, timeout: float = 600, cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)  # a journal of the test's own
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``python -m build`` makes from the sdist it makes of this source tree; twine checks both."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    (built,) = out.glob("slurmbatch-*.whl")
    (sdist,) = out.glob("slurmbatch-*.tar.gz")
    checked = run(sys.executable, "-m", "twine", "check", "--strict", built, sdist, cwd=out).stdout
    assert checked.count("PASSED") == 2, checked
    return built


def test_the_wheel_holds_the_packages_and_the_license_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"slurmbatch", "slurmbatch_covalent"} <= tops
    assert not tops & {"tests", "examples", "benchmarks", "docs"}
    assert any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in names)
    assert "slurmbatch/py.typed" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Python: <3.14,>=3.10" in text or "Requires-Python: >=3.10,<3.14" in text
    assert "Programming Language :: Python :: 3.13" in text


def test_the_installed_wheel_runs_the_demo_and_doctor(
    wheel: Path, local_cluster: LocalCluster, slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Dependencies from the same index the project's own environments use; slurmbatch from the wheel only.
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    where = run(python, "-c", "import slurmbatch; print(slurmbatch.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where
    demo = tmp_path / "demo.py"
    shutil.copy(ROOT / "examples" / "demo.py", demo)
    # The demo finds the cluster through LocalCluster's default state directory; point it at the test one.
    text = demo.read_text()
    assert "LocalCluster().settings()" in text
    demo.write_text(
        text.replace(
            "LocalCluster().settings()", f"LocalCluster({str(local_cluster.state_dir)!r}).settings()"
        )
    )
    cache = tmp_path / "cache"
    shown = run(python, demo, cwd=tmp_path, cache=cache).stdout
    assert "hypot(3, 4) = 5.0" in shown and "demo done" in shown
    first_job = shown.split("submitted job ", 1)[1].split(";", 1)[0]
    doctor = run(
        venv / "bin" / "slurmbatch",
        "doctor",
        "127.0.0.1",
        "--port",
        str(slurm_cluster.port),
        "--user",
        slurm_cluster.user,
        "--key-file",
        slurm_cluster.key_file,
        "--known-hosts",
        slurm_cluster.known_hosts,
        "--ssh-config",
        os.devnull,
        "--remote-workdir",
        slurm_cluster.remote_workdir,
        "--python",
        slurm_cluster.python,
        cwd=tmp_path,
    )
    assert "A session to this cluster would work." in doctor.stdout
    listed = run(venv / "bin" / "slurmbatch", "jobs", "--all", "--json", cwd=tmp_path, cache=cache).stdout
    states = {row["job_id"]: row["state"] for row in json.loads(listed)}
    assert states[first_job] == "COMPLETED", states
    assert "CANCELLED" in states.values()  # the demo's last job
