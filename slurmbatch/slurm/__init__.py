"""What slurmbatch knows about Slurm, free of I/O.

Render batch scripts from a :class:`~slurmbatch.JobSpec`, build the command lines of ``sbatch``,
``squeue``, ``sacct``, ``scancel`` and ``scontrol``, parse what they print, and turn job end states into
errors.
"""

from slurmbatch.slurm.commands import (
    SQUEUE_FORMAT,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    scontrol_config_argv,
    shell_join,
    squeue_argv,
)
from slurmbatch.slurm.options import format_value, render_option, render_options, sbatch_quote, shell_quote
from slurmbatch.slurm.parse import (
    expand_job_id,
    is_invalid_job_id_error,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_config,
    parse_squeue,
)
from slurmbatch.slurm.script import CONDA_ACTIVATE_FAILED, render_script
from slurmbatch.slurm.states import JobState, JobStatus, failure_for

__all__ = [
    "CONDA_ACTIVATE_FAILED",
    "SQUEUE_FORMAT",
    "JobState",
    "JobStatus",
    "expand_job_id",
    "failure_for",
    "format_value",
    "is_invalid_job_id_error",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_config",
    "parse_squeue",
    "render_option",
    "render_options",
    "render_script",
    "sacct_argv",
    "sbatch_argv",
    "sbatch_quote",
    "scancel_argv",
    "scontrol_config_argv",
    "shell_join",
    "shell_quote",
    "squeue_argv",
]
