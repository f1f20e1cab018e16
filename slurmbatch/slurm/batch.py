"""Many sbatch calls in one remote command, each reporting its own job id or its own error. Pure.

The login node runs the calls in a few parallel lanes (slurmctld serves several sbatch RPCs at once; one
lane reaches about a third of what eight do). Each call prints one line ``<token> <exit status> <output>``
with the output's newlines folded to a record separator, so one bad job never hides its neighbours' ids.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import attrs

__all__ = ["SbatchReply", "batch_sbatch_command", "parse_batch_sbatch"]

_RS = "\x1e"
_FUNCTION = (
    'sb_submit() { out=$(sbatch --parsable "$2" 2>&1); rc=$?; '
    "printf '%s %s %s\\n' \"$1\" \"$rc\" \"$(printf '%s' \"$out\" | tr '\\n' '\\036')\"; }"
)


@attrs.frozen
class SbatchReply:
    """What sbatch answered for one job: its id, or (``job_id`` None) its error text."""

    token: str
    exit_status: int
    output: str

    @property
    def job_id(self) -> str | None:
        """The job id from ``--parsable`` output (``123`` or ``123;cluster``), or None on failure."""
        if self.exit_status != 0:
            return None
        for line in self.output.splitlines():
            first = line.split(";", 1)[0].strip()
            if first.isdigit():
                return first
        return None


def batch_sbatch_command(jobs: Sequence[tuple[str, str]], *, lanes: int = 8) -> str:
    """A shell command running ``sbatch --parsable SCRIPT`` for each ``(token, script path)``.

    Calls are spread over at most ``lanes`` background subshells; the output has one line per job.
    """
    if not jobs:
        raise ValueError("batch_sbatch_command needs at least one job")
    lanes = max(1, min(lanes, len(jobs)))
    parts = [_FUNCTION]
    for lane in range(lanes):
        calls = "; ".join(f"sb_submit {shlex.quote(t)} {shlex.quote(p)}" for t, p in jobs[lane::lanes])
        parts.append(f"( {calls} ) &")
    parts.append("wait")
    return "\n".join(parts)


def parse_batch_sbatch(stdout: str) -> dict[str, SbatchReply]:
    """Parse the output of :func:`batch_sbatch_command` into one reply per token."""
    replies: dict[str, SbatchReply] = {}
    for line in stdout.splitlines():
        token, _, rest = line.partition(" ")
        status, _, output = rest.partition(" ")
        if not token or not status.lstrip("-").isdigit():
            continue
        replies[token] = SbatchReply(token, int(status), output.replace(_RS, "\n").strip())
    return replies
