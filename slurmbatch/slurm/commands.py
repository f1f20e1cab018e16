"""Command lines for ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and ``scontrol``.

Each builder returns an argv list; :func:`shell_join` turns it into one shell-safe command string for an
SSH exec. Job ids are checked before they go anywhere near a shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

__all__ = [
    "SQUEUE_FORMAT",
    "sacct_argv",
    "sbatch_argv",
    "scancel_argv",
    "scontrol_config_argv",
    "shell_join",
    "squeue_argv",
]

SQUEUE_FORMAT = "JobArrayID:64|,State:24|,exit_code:12|,Reason:200"
"""squeue's ``--Format``: job id (``123`` or ``123_4``), state, raw wait status and the reason a job
waits, in padded columns each ended by ``|`` (a field's suffix).

``JobArrayID`` rather than ``JobID``: for an array task, ``JobID`` prints the task's own numeric id
(``125``) where ``JobArrayID`` prints ``123_2``, the id we submitted and track. ``exit_code`` exists only
in ``--Format``. The ``|`` suffixes split the columns: a reason may contain spaces
(``(ReqNodeNotAvail, UnavailableNodes:n1)``).
"""

_JOB_ID = re.compile(r"\d+(?:_\d+)?")


def shell_join(argv: Iterable[str]) -> str:
    """Join *argv* into one command string in which every word is quoted for the shell where needed."""
    return shlex.join(argv)


def sbatch_argv(script_path: str, *, extra: Sequence[str] = ()) -> list[str]:
    """``sbatch --parsable [extra...] SCRIPT``: submit a script; stdout is then just the job id."""
    return ["sbatch", "--parsable", *extra, script_path]


def squeue_argv(job_ids: Iterable[str]) -> list[str]:
    """Ask squeue about *job_ids*, in any state: one line per job, per started array task, and per range
    of pending array tasks (``123_[5-9]``, which :func:`~slurmbatch.slurm.parse.parse_squeue` expands).

    Give an array's own id to hear about all its tasks: the output then stays a few lines for an array
    of thousands of pending tasks. Finished jobs stay visible only for the controller's ``MinJobAge``;
    after that, ask :func:`sacct_argv`.
    """
    return [
        "squeue",
        "--noheader",
        "--states=all",
        f"--jobs={_id_list(job_ids)}",
        f"--Format={SQUEUE_FORMAT}",
    ]


def sacct_argv(job_ids: Iterable[str], *, jobcomp: bool = False) -> list[str]:
    """Ask sacct how *job_ids* ended: ``JobID|State|ExitCode`` lines, no header, no job steps.

    With *jobcomp*, read the job completion records (``--completion``) instead of the accounting database,
    for clusters that run no slurmdbd.
    """
    argv = ["sacct", "--allocations", "--noheader", "--parsable2", f"--jobs={_id_list(job_ids)}"]
    argv.append("--format=JobID,State,ExitCode")
    if jobcomp:
        argv.append("--completion")
    return argv


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    """``scancel ID...``: cancel jobs or array tasks (an array's base id cancels every task)."""
    return ["scancel", *_checked_ids(job_ids)]


def scontrol_config_argv() -> list[str]:
    """``scontrol show config``: the controller's settings, e.g. ``MinJobAge`` and ``MaxArraySize``."""
    return ["scontrol", "show", "config"]


def _checked_ids(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        job_ids = [job_ids]
    ids = list(dict.fromkeys(job_ids))  # no duplicates, order kept
    for job_id in ids:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"{job_id!r} is not a Slurm job id; expected digits like '123' or '123_4'.")
    if not ids:
        # An empty --jobs= would make squeue and sacct report on every job.
        raise ValueError("No job ids were given; pass at least one.")
    return ids


def _id_list(job_ids: Iterable[str]) -> str:
    return ",".join(_checked_ids(job_ids))
