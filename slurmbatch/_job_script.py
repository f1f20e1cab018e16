"""The batch script of one job: a single call, or an array whose task ``i`` runs call ``i``. Pure."""

from __future__ import annotations

import re
import shlex
import sys
from importlib.metadata import version

import attrs

from . import _probe
from ._remote_layout import RemoteLayout
from ._submitter import ArrayShape
from .payload import FunctionBlob, runner_digest
from .slurm.script import render_script
from .spec import JobSpec

__all__ = ["LOCAL_CLOUDPICKLE", "LOCAL_PYTHON", "render_job_script"]

#: This client's Python minor version and cloudpickle version: the job side must match them.
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
LOCAL_CLOUDPICKLE = version("cloudpickle")


def render_job_script(
    layout: RemoteLayout,
    python: str,
    spec: JobSpec,
    blob: FunctionBlob,
    token: str,
    array: ArrayShape | None,
    dependency: str | None = None,
) -> str:
    """The batch script of job ``token`` (``python``: the session's interpreter, unless the spec names one).

    ``dependency``: Slurm's ``--dependency`` for the jobs whose values the calls take (``afterok:...``).
    """
    interpreter = _probe.python_command(spec.python or python)
    runner = layout.runner(runner_digest())
    # Array tasks share the job's files; the runner puts $SLURM_ARRAY_TASK_ID in place of {task}.
    task = token if array is None else f"{token}.{{task}}"
    result = layout.result(task)
    run_argv = [
        *interpreter,
        runner,
        "run",
        layout.function(blob.digest),
        layout.arguments(token),
        result,
        "--expect-python",
        LOCAL_PYTHON,
        "--expect-cloudpickle",
        LOCAL_CLOUDPICKLE.split(".")[0],
    ]
    if array is not None:
        run_argv.append("--packed")
    if spec.requeue:
        run_argv += ["--resume", layout.resume(task), "--checkpoint-signal", spec.requeue_signal]
    if not spec.use_srun:  # ranks merge their outcomes in `gather`, which keeps the value inline
        run_argv += ["--value-file", layout.value(task)]
    epilogue: list[list[str]] = []
    if spec.use_srun:
        run_argv += ["--rank-dir", layout.rank_dir(task)]
        epilogue.append([*interpreter, runner, "gather", result, "--rank-dir", layout.rank_dir(task)])
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", blob.name.rsplit(".", 1)[-1])[:40]
    output = token if array is None else f"{token}.%a"  # Slurm's own placeholder for the task id
    directives: dict[str, str | bool] = {
        "job-name": spec.job_name or f"{name}-{token}",
        "comment": token,
        "output": layout.stdout(output),
        "error": layout.stderr(output),
    }
    if spec.requeue:
        directives["requeue"] = True
        directives["signal"] = f"B:{spec.requeue_signal}@{spec.signal_lead}"
    if array is not None:
        throttle = f"%{spec.array_parallelism}" if spec.array_parallelism else ""
        directives["array"] = f"0-{array.size - 1}{throttle}"
    warned = ""
    if spec.requeue:
        # A shell word: the path with $SLURM_ARRAY_TASK_ID in place of {task}.
        parts = (layout.resume(task) + ".warned").split("{task}")
        warned = '"$SLURM_ARRAY_TASK_ID"'.join(shlex.quote(part) for part in parts)
    if dependency:
        own = next((key for key in spec.options if key in ("dependency", "d")), None)
        if own is not None:  # the spec's own dependency holds too: Slurm's "," means both
            dependency = f"{spec.options[own]},{dependency}"
            spec = attrs.evolve(spec, options={k: v for k, v in spec.options.items() if k != own})
        directives["dependency"] = dependency
    return render_script(
        spec, run_argv=run_argv, directives=directives, epilogue=epilogue, warned_file=warned
    )
