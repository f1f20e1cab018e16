"""Command lines for ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and ``scontrol``.

Each builder returns an argv list; :func:`shell_join` turns it into one shell-safe command string for an
SSH exec. Job ids are checked before they go anywhere near a shell.

A job of another cluster of a multi-cluster site keeps that cluster in its id the way ``sbatch
--parsable`` prints it (``123;cluster``, an array task ``123_4;cluster``): the commands about it then
name the cluster (``--clusters=cluster``), and one command never mixes jobs of two clusters.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

__all__ = [
    "SQUEUE_FORMAT",
    "array_task_id",
    "by_cluster",
    "sacct_argv",
    "sacct_options",
    "sbatch_argv",
    "scancel_argv",
    "scancel_commands",
    "scontrol_config_argv",
    "shell_join",
    "split_cluster",
    "squeue_argv",
    "squeue_options",
]

SQUEUE_FORMAT = "JobArrayID:0|,State:0|,exit_code:0|,Reason:0"
"""squeue's ``--Format``: job id (``123`` or ``123_4``), state, raw wait status and the reason a job
waits, in columns each ended by ``|`` (a field's suffix).

``JobArrayID`` rather than ``JobID``: for an array task, ``JobID`` prints the task's own numeric id
(``125``) where ``JobArrayID`` prints ``123_2``, the id we submitted and track. ``exit_code`` exists only
in ``--Format``. The ``|`` suffixes split the columns: a reason may contain spaces
(``(ReqNodeNotAvail, UnavailableNodes:n1)``). Width 0 prints each field whole: a fixed width cuts a
long range of pending tasks (``123_[0-2,4-6,8,...,40-300]``) at that width, and the tasks past the cut
would look gone.
"""

_JOB_ID = re.compile(r"\d+(?:_\d+)?(?:;[A-Za-z0-9][A-Za-z0-9_-]*)?")


def shell_join(argv: Iterable[str]) -> str:
    """Join *argv* into one command string in which every word is quoted for the shell where needed."""
    return shlex.join(argv)


def sbatch_argv(script_path: str, *, extra: Sequence[str] = ()) -> list[str]:
    """``sbatch --parsable [extra...] SCRIPT``: submit a script; stdout is then just the job id."""
    return ["sbatch", "--parsable", *extra, script_path]


def squeue_options(*, cluster: str | None = None) -> list[str]:
    """squeue's words before the job list: every state, no header, :data:`SQUEUE_FORMAT` columns, and
    the cluster of the jobs asked about (if not the local one)."""
    return [
        "squeue",
        *_cluster_option(cluster),
        "--noheader",
        "--states=all",
        f"--Format={SQUEUE_FORMAT}",
    ]


def squeue_argv(job_ids: Iterable[str]) -> list[str]:
    """Ask squeue about *job_ids*, in any state: one line per job, per started array task, and per range
    of pending array tasks (``123_[5-9]``, which :func:`~slurmbatch.slurm.parse.parse_squeue` expands).

    Give an array's own id to hear about all its tasks: the output then stays a few lines for an array
    of thousands of pending tasks. Finished jobs stay visible only for the controller's ``MinJobAge``;
    after that, ask :func:`sacct_argv`. Pending ranges are printed whole only with ``SLURM_BITSTR_LEN=0``
    in squeue's environment (see :data:`~slurmbatch.slurm.status.QUERY_ENVIRONMENT`). All ids must be of
    one cluster.
    """
    ids, cluster = _one_cluster(job_ids)
    *head, fmt = squeue_options(cluster=cluster)
    return [*head, f"--jobs={','.join(ids)}", fmt]


def sacct_options(*, jobcomp: bool = False, cluster: str | None = None) -> list[str]:
    """sacct's words apart from the job list; see :func:`sacct_argv`."""
    argv = ["sacct", *_cluster_option(cluster), "--allocations", "--noheader", "--parsable2"]
    argv.append("--format=JobID,State,ExitCode")
    if jobcomp:
        argv.append("--completion")
    return argv


def sacct_argv(job_ids: Iterable[str], *, jobcomp: bool = False) -> list[str]:
    """Ask sacct how *job_ids* ended: ``JobID|State|ExitCode`` lines, no header, no job steps.

    With *jobcomp*, read the job completion records (``--completion``) instead of the accounting database,
    for clusters that run no slurmdbd. All ids must be of one cluster.
    """
    ids, cluster = _one_cluster(job_ids)
    argv = sacct_options(jobcomp=jobcomp, cluster=cluster)
    at = argv.index("--format=JobID,State,ExitCode")
    return [*argv[:at], f"--jobs={','.join(ids)}", *argv[at:]]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    """``scancel ID...``: cancel jobs or array tasks (an array's base id cancels every task). All ids must
    be of one cluster; :func:`scancel_commands` splits any list."""
    ids, cluster = _one_cluster(job_ids)
    return ["scancel", *_cluster_option(cluster), *ids]


def scancel_commands(job_ids: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Cancel *job_ids* of any clusters: one ``(command, ids)`` per cluster, the command (``xargs scancel
    [--clusters=C]``) reading the ids from its standard input, one a line, so that any number of them
    fits (xargs splits them over as few calls as the argument limit allows)."""
    return [
        (shell_join(["xargs", "scancel", *_cluster_option(cluster)]), ids)
        for cluster, ids in by_cluster(job_ids).items()
    ]


def scontrol_config_argv() -> list[str]:
    """``scontrol show config``: the controller's settings, e.g. ``MinJobAge`` and ``MaxArraySize``."""
    return ["scontrol", "show", "config"]


def split_cluster(job_id: str) -> tuple[str, str | None]:
    """``"123_4;c1"`` -> ``("123_4", "c1")``; an id of the local cluster gives ``(job_id, None)``."""
    local, _, cluster = job_id.partition(";")
    return local, cluster or None


def array_task_id(job_id: str, index: int) -> str:
    """The id of task *index* of array job *job_id*: ``123`` -> ``123_4``, ``123;c1`` -> ``123_4;c1``."""
    local, cluster = split_cluster(job_id)
    return f"{local}_{index}" + (f";{cluster}" if cluster else "")


def by_cluster(job_ids: Iterable[str]) -> dict[str | None, list[str]]:
    """Checked *job_ids* grouped by cluster (``None``: the local one), without their cluster suffix."""
    groups: dict[str | None, list[str]] = {}
    for job_id in _checked_ids(job_ids):
        local, cluster = split_cluster(job_id)
        groups.setdefault(cluster, []).append(local)
    return groups


def _one_cluster(job_ids: Iterable[str]) -> tuple[list[str], str | None]:
    groups = by_cluster(job_ids)
    if len(groups) > 1:
        names = ", ".join(sorted(c or "(local)" for c in groups))
        raise ValueError(f"One command cannot ask about jobs of several clusters ({names}); split them.")
    [(cluster, ids)] = groups.items()
    return ids, cluster


def _cluster_option(cluster: str | None) -> list[str]:
    return [f"--clusters={cluster}"] if cluster else []


def _checked_ids(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        job_ids = [job_ids]
    ids = list(dict.fromkeys(job_ids))  # no duplicates, order kept
    for job_id in ids:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise ValueError(
                f"{job_id!r} is not a Slurm job id; expected digits like '123' or '123_4' (or '123;cluster')."
            )
    if not ids:
        # An empty --jobs= would make squeue and sacct report on every job.
        raise ValueError("No job ids were given; pass at least one.")
    return ids
