"""Many sbatch calls in one remote command, each reporting its own job id or its own error. Pure.

The login node runs the calls in a few parallel lanes (slurmctld serves several sbatch RPCs at once; one
lane reaches about a third of what eight do). Each call prints one line ``<token> <exit status> <output>``
with the output's newlines folded to a record separator, so one bad job never hides its neighbours' ids.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

import attrs

__all__ = ["SbatchReply", "batch_sbatch_command", "parse_batch_sbatch", "write_files_script"]

_RS = "\x1e"
# Bash builtins only, apart from sbatch itself: on a login node, process starts are what costs.
_FUNCTION = (
    'sb_submit() { local out rc; out=$(sbatch --parsable "$2" 2>&1); rc=$?; '
    "printf '%s %s %s\\n' \"$1\" \"$rc\" \"${out//$'\\n'/$'\\036'}\"; }"
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
    # Not splitlines(): it also splits at the record separator that stands for the output's newlines.
    for line in stdout.split("\n"):
        token, _, rest = line.partition(" ")
        status, _, output = rest.partition(" ")
        if not token or not status.lstrip("-").isdigit():
            continue
        replies[token] = SbatchReply(token, int(status), output.replace(_RS, "\n").strip())
    return replies


def write_files_script(files: Mapping[str, bytes]) -> str:
    """Shell lines that write each file (mode 0600) with bash's builtin printf, no process per file:
    files ride along with the command that submits them, so a batch costs one round trip.
    """
    lines = ["umask 077"]
    for path, data in files.items():
        lines.append(f"printf '%b' '{_printf_escaped(data)}' > {shlex.quote(path)}")
    return "\n".join(lines)


_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("\\"), ord("'")}


def _printf_escaped(data: bytes) -> str:
    """``data`` as the argument of ``printf '%b'`` inside single quotes: octal escapes for the rest."""
    return "".join(chr(byte) if byte in _PLAIN else f"\\0{byte:03o}" for byte in data)
