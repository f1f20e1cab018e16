"""One status query for many jobs: the remote script that asks squeue and sacct, and what it answered. Pure.

The job ids travel on the script's standard input, one command per line (``squeue - 1,2,3``,
``sacct c1 7,8``: kind, cluster or ``-``, ids), so no list is bound by the login node's argument limits
beyond one chunk (:data:`CHUNK_CHARS`). The script runs each command with its input closed, and frames
each command's output, its standard error and its exit status separately::

    @@sb-out 0
    ...squeue's output...
    @@sb-err
    ...squeue's standard error...
    @@sb-rc 0

so a failing sacct never hides squeue's valid rows, and a command that did not run, or whose frame was
cut short, is never read as "the scheduler knows none of these jobs".
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

import attrs

from slurmbatch.slurm.commands import by_cluster, sacct_options, squeue_options
from slurmbatch.slurm.parse import cut_short_arrays, is_invalid_job_id_error, parse_sacct, parse_squeue
from slurmbatch.slurm.states import JobStatus

__all__ = [
    "CHUNK_CHARS",
    "QUERY_ENVIRONMENT",
    "StatusAnswer",
    "StatusAsk",
    "parse_status_reply",
    "status_asks",
    "status_data",
    "status_script",
]

#: The longest id list given to one command: well below Linux's 128 KiB for one argument.
CHUNK_CHARS = 32_000
#: Set for every query: squeue prints pending array ranges whole (``123_[5-1000%8]``) only when this
#: is 0; by default it cuts long ones short (``123_[5-9,11,...``), hiding pending tasks.
QUERY_ENVIRONMENT = {"SLURM_BITSTR_LEN": "0"}

_OUT, _ERR, _RC = "@@sb-out", "@@sb-err", "@@sb-rc"


@attrs.frozen
class StatusAsk:
    """One command of a query: ``squeue`` or ``sacct`` about ``ids`` (full ids, cluster suffix kept)."""

    kind: str
    cluster: str | None
    ids: tuple[str, ...]

    def data_line(self) -> str:
        local = ",".join(i.partition(";")[0] for i in self.ids)
        return f"{self.kind} {self.cluster or '-'} {local}"


@attrs.frozen
class StatusAnswer:
    """What a query learnt: statuses by full job id, and the asks whose command did not answer (their
    jobs' fate is unknown: conclude nothing from their silence)."""

    statuses: dict[str, JobStatus]
    unanswered: tuple[StatusAsk, ...]
    cut_short: frozenset[str] = frozenset()  # arrays whose pending tasks squeue did not name in full

    def answered(self, kind: str, job_id: str) -> bool:
        """Whether the ``kind`` command that was asked about ``job_id`` answered."""
        return not any(a.kind == kind and job_id in a.ids for a in self.unanswered)


def status_asks(squeue_ids: Iterable[str], sacct_ids: Iterable[str]) -> list[StatusAsk]:
    """The commands that ask about ``squeue_ids`` and ``sacct_ids``: by cluster, in chunks."""
    asks: list[StatusAsk] = []
    for kind, ids in (("squeue", sorted(set(squeue_ids))), ("sacct", sorted(set(sacct_ids)))):
        if not ids:
            continue
        for cluster, local in by_cluster(ids).items():
            suffix = f";{cluster}" if cluster else ""
            chunk: list[str] = []
            size = 0
            for job_id in local:
                if chunk and size + len(job_id) + 1 > CHUNK_CHARS:
                    asks.append(StatusAsk(kind, cluster, tuple(chunk)))
                    chunk, size = [], 0
                chunk.append(job_id + suffix)
                size += len(job_id) + 1
            asks.append(StatusAsk(kind, cluster, tuple(chunk)))
    return asks


def status_data(asks: Sequence[StatusAsk]) -> str:
    """The script's standard input for ``asks``."""
    return "".join(ask.data_line() + "\n" for ask in asks)


def status_script(*, jobcomp: bool, setup: str = "") -> str:
    """The POSIX sh script that runs the commands its standard input names (see the module docstring).

    ``setup`` (shell lines, each ending in a newline) runs first; with ``jobcomp`` sacct reads the job
    completion records instead of slurmdbd.
    """
    squeue = shlex.join(squeue_options())
    sacct = shlex.join(sacct_options(jobcomp=jobcomp))
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in QUERY_ENVIRONMENT.items())
    return "\n".join(
        [
            setup.rstrip("\n"),
            f"export {exports}",
            "sb_err=$(mktemp) || exit 70",
            "sb_n=0",
            "while IFS=' ' read -r sb_kind sb_cluster sb_ids; do",
            '  sb_m=; [ "$sb_cluster" = - ] || sb_m="--clusters=$sb_cluster"',
            f"  printf '{_OUT} %s\\n' \"$sb_n\"",
            "  case $sb_kind in",
            f'    squeue) {squeue} ${{sb_m:+"$sb_m"}} "--jobs=$sb_ids" ;;',
            f'    sacct) {sacct} ${{sb_m:+"$sb_m"}} "--jobs=$sb_ids" ;;',
            '    *) echo "slurmbatch: no such query: $sb_kind" >&2; false ;;',
            '  esac </dev/null 2>"$sb_err"',
            "  sb_rc=$?",
            f'  echo {_ERR}; cat "$sb_err"; echo',
            f"  printf '{_RC} %s\\n' \"$sb_rc\"",
            "  sb_n=$((sb_n + 1))",
            "done",
            'rm -f -- "$sb_err"',
        ]
    ).lstrip("\n")


def parse_status_reply(stdout: str, asks: Sequence[StatusAsk]) -> StatusAnswer:
    """Read what :func:`status_script` printed for ``asks``.

    An ask whose frame is missing or cut short, or whose command failed, is unanswered, except a squeue
    that failed because it knows none of the ids (they were purged: ask sacct), which answered "none".
    """
    frames = _frames(stdout)
    statuses: dict[str, JobStatus] = {}
    unanswered: list[StatusAsk] = []
    cut_short: set[str] = set()
    for index, ask in enumerate(asks):
        frame = frames.get(index)
        if frame is None:
            unanswered.append(ask)
            continue
        out, err, rc = frame
        if rc != 0:
            if not (ask.kind == "squeue" and is_invalid_job_id_error(err)):
                unanswered.append(ask)
            continue
        suffix = f";{ask.cluster}" if ask.cluster else ""
        if ask.kind == "squeue":
            out = _without_cluster_headers(out)
            found = parse_squeue(out)
            cut_short |= {base + suffix for base in cut_short_arrays(out)}
        else:
            found = parse_sacct(out)
        statuses.update({job_id + suffix: status for job_id, status in found.items()})
    return StatusAnswer(statuses, tuple(unanswered), frozenset(cut_short))


def _frames(stdout: str) -> dict[int, tuple[str, str, int]]:
    """Complete frames by index: (output, standard error, exit status)."""
    frames: dict[int, tuple[str, str, int]] = {}
    index: int | None = None
    out: list[str] = []
    err: list[str] = []
    target = out
    for line in stdout.split("\n"):
        if line.startswith(_OUT + " "):
            index, out, err = _int(line[len(_OUT) + 1 :]), [], []
            target = out
        elif line == _ERR and index is not None:
            target = err
        elif line.startswith(_RC + " ") and index is not None:
            rc = _int(line[len(_RC) + 1 :])
            if rc is not None:
                frames[index] = ("\n".join(out), "\n".join(err), rc)
            index = None
        elif index is not None:
            target.append(line)
    return frames


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _without_cluster_headers(text: str) -> str:
    # squeue --clusters heads each cluster's rows with "CLUSTER: name".
    return "\n".join(line for line in text.split("\n") if not line.startswith("CLUSTER:"))
