"""Virtual environments of the local cluster's system Python, for the contenders' login-node and job sides.

On the host's Slurm release the cluster's system Python is the host's ``/usr/bin/python3`` and pip
installs from the host's configured indexes. On another release the login node and the jobs live in
that release's Debian root: the venv is made by the root's own Python, inside it, from wheels fetched
(or built) here by this interpreter (the same Python minor as the root's, checked by the caller), because the root
has no pip configuration of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


class VenvUnavailable(Exception):
    """A venv could not be made: its packages do not install there. The message says why."""


def inside(root: Path | None, argv: Sequence[str]) -> list[str]:
    """``argv`` as it runs on the cluster's login node: in its root, if it has one."""
    return list(argv) if root is None else ["/usr/sbin/chroot", str(root), *argv]


def works(root: Path | None, python: Path, check: str, env: dict[str, str] | None = None) -> bool:
    """Whether ``python`` exists and runs ``check`` without error."""
    if not python.exists():
        return False
    done = subprocess.run(inside(root, [str(python), "-c", check]), capture_output=True, env=env, check=False)
    return done.returncode == 0


def make_venv(
    path: Path,
    packages: Sequence[str],
    check: str,
    *,
    base: str = SYSTEM_PYTHON,
    root: Path | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """A venv of ``base`` (by default the cluster's system Python; in ``root`` if given) at ``path`` with
    ``packages``; made once, kept while ``check`` passes in it. Raises :class:`VenvUnavailable` with pip's
    words when the packages do not install."""
    python = path / "bin" / "python"
    if works(root, python, check, env):
        return python
    print(f"installing {' '.join(packages)} into {path} (once)...", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    _run(inside(root, [base, "-m", "venv", str(path)]), f"making a venv at {path}")
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if root is not None:
        wheels = path.parent / "wheels"
        _run(
            # `pip wheel` builds here what has no wheel; this Python's minor is the root's.
            [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(wheels), *packages],
            f"fetching wheels of {', '.join(packages)} for Python {sys.version_info.major}.{sys.version_info.minor}",
        )
        install += ["--no-index", "--find-links", str(wheels)]
    _run(inside(root, [*install, *packages]), f"installing {', '.join(packages)}")
    if not works(root, python, check, env):
        raise VenvUnavailable(f"{', '.join(packages)} installed into {path}, but `{check}` fails there")
    return python


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise VenvUnavailable(f"{what} failed: {' '.join(lines[-2:])[:300]}")
