"""Running the job-side runner for real, as a subprocess of this Python, as a batch script would."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cloudpickle

PYTHON_MINOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
CLOUDPICKLE_MAJOR = cloudpickle.__version__.split(".")[0]


def write_call(directory: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Path, Path]:
    """Write the function file and the call file of ``fn(*args, **kwargs)`` into ``directory``."""
    fn_path, args_path = directory / "fn.pkl", directory / "args.pkl"
    fn_path.write_bytes(cloudpickle.dumps(fn))
    args_path.write_bytes(cloudpickle.dumps((args, kwargs)))
    return fn_path, args_path


def run_runner(
    runner_path: Path,
    *argv: str | Path,
    env: Mapping[str, str] = {},
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``runner_path`` with ``argv`` in this environment without its SLURM_ variables, plus ``env``.

    Nor PYTHONDONTWRITEBYTECODE, which a test run may set: a job's environment seldom has it.
    """
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SLURM_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    return subprocess.run(
        [sys.executable, *python_flags, str(runner_path), *map(str, argv)],
        env=clean | dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,  # the 0600 mode must come from the runner, not from a strict umask
    )


def read_outcome(path: Path) -> dict[str, Any]:
    """The outcome dict in the file ``path``."""
    outcome = pickle.loads(path.read_bytes())
    assert isinstance(outcome, dict)
    return outcome
