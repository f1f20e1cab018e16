"""Many sbatch calls in one remote command, each reporting its own job id or its own error. Pure.

The login node runs the calls in a few parallel lanes (slurmctld serves several sbatch RPCs at once; one
lane reaches about a third of what eight do). Each call prints one line ``<token> <exit status> <output>``
with the output's newlines folded to a record separator, so one bad job never hides its neighbours' ids.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence

import attrs

__all__ = [
    "SESSION_VARIABLES",
    "WRITE_FAILED",
    "SbatchReply",
    "batch_sbatch_command",
    "lookup_command",
    "parse_batch_sbatch",
    "parse_lookup",
    "write_files_script",
]

_RS = "\x1e"
# What sbatch says when it could not reach the controller at all; the job was not submitted.
_CONTROLLER_DOWN = ("Unable to contact slurm controller",)
# What sbatch says when its request reached the controller but the answer did not come back: the job
# may well exist, and must be looked up (by its token) before it is sent again.
_MAYBE_SUBMITTED = (
    "Socket timed out on send/recv",
    "Zero Bytes were transmitted or received",
    "Connection reset by peer",
    "Connection timed out",
)
_PARSABLE_ID = re.compile(r"(\d+)(;[A-Za-z0-9][A-Za-z0-9_-]*)?")

SESSION_VARIABLES = (
    "SBATCH_OUTPUT",
    "SBATCH_ERROR",
    "SBATCH_ARRAY_INX",
    "SBATCH_JOB_NAME",
    "SBATCH_EXPORT",
    "SBATCH_WAIT",
    "SBATCH_PARSABLE",
)
"""``SBATCH_*`` variables of the login environment that would override what the session relies on (its
``#SBATCH`` output paths, array range, job name, the job's environment; an sbatch that returns at once):
environment variables beat ``#SBATCH`` lines, so they are unset for the session's sbatch calls. What a
JobSpec sets is in the script; every other ``SBATCH_*`` variable (partition, account...) still applies."""


# Bash builtins only, apart from sbatch itself: on a login node, process starts are what costs. With a
# fence, each reply is also appended to the fence's replies file (one short line: an atomic append).
# sbatch's answer goes through a file per lane rather than $(...): a command substitution forks a subshell
# per job, and on a busy login node every process start counts.
def _submit_function(replies: str | None) -> str:
    keep = f" printf '%s\\n' \"$line\" >> {replies};" if replies else ""
    return (
        'sb_submit() { local out rc line; sbatch --parsable "$2" > "$sb_out" 2>&1; rc=$?; '
        "IFS= read -r -d '' out < \"$sb_out\"; out=${out%$'\\n'}; "
        "printf -v line '%s %s %s' \"$1\" \"$rc\" \"${out//$'\\n'/$'\\036'}\";"
        f"{keep} printf '%s\\n' \"$line\"; }}"
    )


@attrs.frozen
class SbatchReply:
    """What sbatch answered for one job: its id, or (``job_id`` None) its error text."""

    token: str
    exit_status: int
    output: str

    @property
    def controller_unreachable(self) -> bool:
        """True if sbatch failed only because slurmctld did not answer (e.g. while it restarts)."""
        return self.exit_status != 0 and any(sign in self.output for sign in _CONTROLLER_DOWN)

    @property
    def maybe_submitted(self) -> bool:
        """True if sbatch failed in a way that may have left the job submitted (its answer was lost)."""
        return self.exit_status != 0 and any(sign in self.output for sign in _MAYBE_SUBMITTED)

    @property
    def job_id(self) -> str | None:
        """The job id from ``--parsable`` output, or None on failure.

        ``--parsable`` prints ``123``, or ``123;cluster`` for a job of another cluster (kept: the job is
        then asked about and cancelled there). The id is the one line that is nothing else: a site's
        notices before or after it (``25 nodes are down for maintenance``) are not ids.
        """
        if self.exit_status != 0:
            return None
        for line in reversed(self.output.splitlines()):
            if _PARSABLE_ID.fullmatch(line.strip()):
                return line.strip()
        return None


def batch_sbatch_command(jobs: Sequence[tuple[str, str]], *, lanes: int = 8, fence: str | None = None) -> str:
    """A shell command running ``sbatch --parsable SCRIPT`` for each ``(token, script path)``.

    Calls are spread over at most ``lanes`` background subshells; the output has one line per job. With
    ``fence`` (see :func:`fenced_script`) the replies are also kept in the fence's directory.
    """
    if not jobs:
        raise ValueError("batch_sbatch_command needs at least one job")
    lanes = max(1, min(lanes, len(jobs)))
    parts = [_submit_function(shlex.quote(f"{fence}/replies") if fence else None)]
    parts.append("unset " + " ".join(SESSION_VARIABLES))
    # Each lane's answer file lives in a private temporary directory, removed when every lane is done.
    parts.append("sb_tmp=$(mktemp -d) || exit 75")
    for lane in range(lanes):
        calls = "; ".join(f"sb_submit {shlex.quote(t)} {shlex.quote(p)}" for t, p in jobs[lane::lanes])
        parts.append(f'( sb_out="$sb_tmp/{lane}"; {calls} ) &')
    parts.append("wait")
    parts.append('rm -rf -- "$sb_tmp"')
    return "\n".join(parts)


def fenced_script(body: str, fence: str) -> str:
    """``body`` made to run at most once, whole or not at all, whatever happens to the connection.

    It is one compound command, so bash runs none of it unless all of it arrived. It first claims the
    directory ``fence`` (``mkdir`` is atomic): a recovery that claimed it first (see
    :func:`fence_recovery_command`) means it must not run. Hang-ups, broken pipes and SIGTERM are ignored, so
    a dropped connection does not stop it halfway. ``fence/done`` marks its end, however it ends (a failed
    file write ends it early); a fence that cannot be created at all ends it with :data:`WRITE_FAILED`.
    """
    quoted = shlex.quote(fence)
    return "\n".join(
        [
            "{",
            "umask 077",  # the fence directory and its replies are as private as the files the body writes
            f"mkdir -- {quoted} 2>/dev/null || {{ [ -d {quoted} ] && {{ echo {FENCED}; exit 0; }}; "
            f"echo 'slurmbatch: cannot create '{quoted}' on the login node, so no job was submitted' >&2; "
            f"exit {WRITE_FAILED}; }}",
            f"sb_done() {{ : > {quoted}/done; }}; trap sb_done EXIT",
            "trap '' HUP PIPE TERM",
            body,
            "}",
        ]
    )


FENCED = "@@slurmbatch-fenced@@"
NOT_STARTED = "@@slurmbatch-not-started@@"
UNFINISHED = "@@slurmbatch-unfinished@@"


def fence_recovery_command(fence: str, *, wait_seconds: int = 120) -> str:
    """What a fenced script did, asked after the connection dropped under it.

    Prints :data:`NOT_STARTED` if it had not started (it now never will), else waits up to
    ``wait_seconds`` for its end and prints its replies, preceded by :data:`UNFINISHED` if it did not end.
    """
    quoted = shlex.quote(fence)
    return "\n".join(
        [
            "umask 077",
            f"if mkdir -- {quoted} 2>/dev/null; then echo {NOT_STARTED}; exit 0; fi",
            f"[ -d {quoted} ] || {{ echo 'slurmbatch: cannot create '{quoted} >&2; exit {WRITE_FAILED}; }}",
            f"i=0; while [ ! -e {quoted}/done ] && [ $i -lt {wait_seconds * 10} ]; do sleep 0.1; i=$((i+1)); done",
            f"[ -e {quoted}/done ] || echo {UNFINISHED}",
            f"cat -- {quoted}/replies 2>/dev/null",
            "exit 0",
        ]
    )


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


def lookup_command() -> str:
    """A command listing the user's jobs that squeue knows, as ``comment|job id|`` lines: how a job whose
    sbatch answer was lost is found by its token (the session puts it in ``--comment``)."""
    return "squeue --me --noheader --states=all '--Format=Comment:0|,ArrayJobID:0|'"


def parse_lookup(stdout: str, tokens: Iterable[str]) -> dict[str, str]:
    """The job id of each of ``tokens`` found in :func:`lookup_command`'s output (an array's own id for
    an array job; the lowest if, against all odds, there are several)."""
    wanted = set(tokens)
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        comment, _, rest = line.partition("|")
        job_id = rest.split("|", 1)[0].strip()
        comment = comment.strip()
        if (
            comment in wanted
            and job_id.isdigit()
            and (comment not in found or int(job_id) < int(found[comment]))
        ):
            found[comment] = job_id
    return found


def write_files_script(files: Mapping[str, bytes]) -> str:
    """Shell lines that write each file (mode 0600) with bash's builtin printf, no process per file:
    files ride along with the command that submits them, so a batch costs one round trip.

    A file that cannot be written (disk full, quota exceeded) stops the command with exit status
    :data:`WRITE_FAILED` before any sbatch runs, and says why on standard error: a job must never be
    submitted with a truncated script or argument file.
    """
    lines = ["umask 077", _WRITE_FAILED_FUNCTION]
    for path, data in files.items():
        quoted = shlex.quote(path)
        lines.append(f"printf '%b' '{_printf_escaped(data)}' > {quoted} || sb_write_failed {quoted}")
    return "\n".join(lines)


#: The exit status of a submit command that could not write a job's files.
WRITE_FAILED = 75
_WRITE_FAILED_FUNCTION = (
    'sb_write_failed() { rm -f -- "$1"; printf \'slurmbatch: could not write %s on the login node, so no job '
    "was submitted (the error above says why). If the disk is full or your quota exceeded, free space in the "
    "remote work directory (df -h and quota -s show it), or pass remote_workdir= a directory with room.\\n' "
    f'"$1" >&2; exit {WRITE_FAILED}; }}'
)


_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("\\"), ord("'")}
# Byte (as a latin-1 character) -> its octal escape, for every byte that is not plain: str.translate
# then escapes a whole file at C speed.
_ESCAPES = {byte: f"\\0{byte:03o}" for byte in range(256) if byte not in _PLAIN}


def _printf_escaped(data: bytes) -> str:
    """``data`` as the argument of ``printf '%b'`` inside single quotes: octal escapes for the rest."""
    return data.decode("latin-1").translate(_ESCAPES)
