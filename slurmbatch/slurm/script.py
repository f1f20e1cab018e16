"""Render the sbatch script for a :class:`~slurmbatch.spec.JobSpec`."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from slurmbatch.slurm.options import render_option, render_options, sbatch_quote, shell_quote
from slurmbatch.spec import JobSpec, OptionValue, VariableValue

__all__ = ["CONDA_ACTIVATE_FAILED", "render_script"]

CONDA_ACTIVATE_FAILED = 99
"""The exit code of a job whose ``conda activate`` failed (the same code covalent-slurm-plugin uses)."""

# sbatch's one-letter options, so that a user's ``J`` counts as setting the session's ``job-name``.
_LONG_NAMES = {
    "A": "account",
    "a": "array",
    "C": "constraint",
    "c": "cpus-per-task",
    "D": "chdir",
    "e": "error",
    "G": "gpus",
    "J": "job-name",
    "N": "nodes",
    "n": "ntasks",
    "o": "output",
    "p": "partition",
    "q": "qos",
    "t": "time",
}


def _canonical(key: str) -> str:
    return _LONG_NAMES.get(key, key).replace("_", "-")


def render_script(
    spec: JobSpec,
    *,
    run_argv: Sequence[str],
    directives: Mapping[str, OptionValue] | None = None,
    epilogue: Sequence[Sequence[str]] = (),
    warned_file: str = "",
) -> str:
    """Return the text of the batch script that runs *run_argv* as *spec* asks.

    With ``spec.requeue``, *warned_file* (a shell word) is the file the script creates when Slurm's
    signal arrives, so that a command that was not ready for the signal yet learns of it.
    *directives* are the session's own ``#SBATCH`` options (job name, output paths, array range, ...);
    each is left out when the spec's options already set it, under any spelling (``J`` or ``job-name``).
    *epilogue* holds commands run after the postrun lines, each an argv that is quoted here.
    """
    if isinstance(run_argv, str) or not run_argv:
        raise ValueError(f"run_argv must be a non-empty list of words, not {run_argv!r}.")
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {text}" for text in render_options(spec.options, quote=sbatch_quote)]
    taken = {_canonical(key) for key in spec.options}
    for key, value in (directives or {}).items():
        text = render_option(key, value, quote=sbatch_quote)
        if text is not None and _canonical(key) not in taken:
            lines.append(f"#SBATCH {text}")
    lines += spec.setup
    lines += [f"export {name}={shell_quote(_variable_text(value))}" for name, value in spec.variables.items()]
    if spec.conda_env is not None:
        lines += _conda_lines(spec.conda_env)
    lines += spec.prerun_commands
    lines += _run_lines(spec, run_argv, warned_file)
    lines += spec.postrun_commands
    lines += [shlex.join(argv) for argv in epilogue]
    return "\n".join(lines) + "\n"


def _variable_text(value: VariableValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _conda_lines(env: str) -> list[str]:
    # A batch script is a non-interactive shell, where ``conda activate`` only works after conda's shell
    # hook has been loaded. Loading it is harmless when conda is already a shell function.
    message = (
        f'slurmbatch: could not activate the conda environment "{env}". Check that it exists on the cluster '
        "and that conda is on the PATH of batch jobs (a setup line can load it, e.g. with module load)."
    )
    return [
        'eval "$(conda shell.bash hook 2>/dev/null)"',
        f"conda activate {shell_quote(env)} || {{ echo {shell_quote(message)} >&2; exit {CONDA_ACTIVATE_FAILED}; }}",
    ]


def _run_lines(spec: JobSpec, run_argv: Sequence[str], warned_file: str) -> list[str]:
    python_line = shlex.join(run_argv)
    if not spec.use_srun:
        lines = [python_line]
    else:
        lines = [" ".join(["srun", *render_options(spec.srun_options), "\\"])]
        if spec.srun_append:
            lines.append(f"{spec.srun_append} \\")
        lines.append(python_line)
    return _passing_on_signal(spec.requeue_signal, lines, warned_file) if spec.requeue else lines


def _passing_on_signal(signal: str, lines: list[str], warned_file: str) -> list[str]:
    """``lines`` (one command) run in the background, with ``signal`` passed on to it.

    ``--signal=B:...`` signals the batch shell alone, which would die of it (or, trapping it, not pass
    it on): the command runs in the background, and the shell waits for it again after each signal.
    The command starts with the signal ignored, so that it does not die of a signal that comes before
    it is ready; the shell also notes the signal in ``warned_file`` for it to find when it is.
    """
    body = list(lines)
    body[0] = f"( trap '' {signal}; exec {body[0]}"
    body[-1] = f"{body[-1]} ) &"
    note = ': > "$sb_warned"; ' if warned_file else ""
    return [
        *([f"sb_warned={warned_file}"] if warned_file else []),
        # $! until sb_child is set: the signal may come between the start of the command and that line.
        f"trap '{note}kill -{signal} \"${{sb_child:-$!}}\" 2>/dev/null' {signal}",
        *body,
        "sb_child=$!",
        'wait "$sb_child"; sb_status=$?',
        'while kill -0 "$sb_child" 2>/dev/null; do wait "$sb_child"; sb_status=$?; done',
        '( exit "$sb_status" )',
    ]
