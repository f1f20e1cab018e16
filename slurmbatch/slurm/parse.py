"""Read what ``sbatch``, ``squeue``, ``sacct`` and ``scontrol`` print.

The parsers take the commands' standard output as built by :mod:`slurmbatch.slurm.commands`. Fields may be
padded with spaces; lines that are not about a job (blank lines, stray messages) are skipped rather than
failing the whole answer, because one odd line must not hide the state of every other job.
"""

from __future__ import annotations

import re

import attrs

from slurmbatch._errors import SubmissionError
from slurmbatch.slurm.states import JobState, JobStatus

__all__ = [
    "expand_job_id",
    "is_invalid_job_id_error",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_config",
    "parse_squeue",
]

_SBATCH_ID = re.compile(r"(\d+)(?:;\S*)?")
_JOB_ID = re.compile(r"\d+(?:_\d+|\+\d+)?")
_PENDING_TASKS = re.compile(r"(\d+)_\[([^\]]*)\]?")
_INTEGER = re.compile(r"-?\d+")
_EXIT_PAIR = re.compile(r"-?\d+:-?\d+")
_CONFIG_LINE = re.compile(r"([A-Za-z][\w.()/-]*)\s*=\s?(.*)")


def parse_sbatch(stdout: str, *, stderr: str = "") -> str:
    """Return the job id printed by ``sbatch --parsable`` (``123``, or ``123;cluster`` on a federation).

    Raises:
        SubmissionError: no job id was printed; the error carries sbatch's own words from *stderr*.
    """
    for line in reversed(stdout.splitlines()):
        match = _SBATCH_ID.fullmatch(line.strip())
        if match:
            return match.group(1)
    said = stderr.strip() or stdout.strip() or "nothing"
    raise SubmissionError(f"sbatch did not print a job id; it said: {said}", sbatch_stderr=stderr)


def expand_job_id(text: str) -> list[str]:
    """Expand a job id as Slurm prints it into the ids of the jobs or array tasks it stands for.

    ``123`` and ``123_4`` stand for themselves; a pending array range like ``123_[5-7,9%2]`` gives
    ``["123_5", "123_6", "123_7", "123_9"]``. A range that Slurm cut short (ending in ``...``) gives the
    tasks it still names in full. Anything else gives an empty list.
    """
    text = text.strip()
    if _JOB_ID.fullmatch(text):
        return [text]
    match = _PENDING_TASKS.fullmatch(text)
    if not match:
        return []
    base, tasks = match.groups()
    ids: list[str] = []
    for piece in tasks.split("%")[0].split(","):
        first, _, last = piece.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue  # cut short by Slurm ("...") or not a task range
        ids += [f"{base}_{task}" for task in range(int(first), int(last or first) + 1)]
    return ids


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """Parse ``squeue`` output of job id, state and exit code columns into statuses by job id.

    Columns are separated by whitespace (``--Format`` with widths) or by ``|``. The exit code column is
    squeue's raw wait status up to Slurm 23.02 (the exit code is its high byte and the signal its low
    seven bits), and ``code:signal`` from 23.11 on, as in sacct.
    """
    statuses: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        fields = _split_columns(line)
        if len(fields) < 2:
            continue
        reason = ""
        if "|" in line and len(fields) >= 4:  # the reason column, which may hold spaces
            fields, reason = fields[:3], "|".join(fields[3:]).strip()
        raw_state, wait_status = " ".join(fields[1:]), None
        exit_pair: tuple[int | None, int | None] | None = None
        if len(fields) >= 3 and _INTEGER.fullmatch(fields[-1]):
            raw_state, wait_status = " ".join(fields[1:-1]), int(fields[-1])
        elif len(fields) >= 3 and _EXIT_PAIR.fullmatch(fields[-1]):
            raw_state, exit_pair = " ".join(fields[1:-1]), _exit_pair(fields[-1])
        if exit_pair is not None:
            base = JobStatus(JobState.from_slurm(raw_state), exit_pair[0], exit_pair[1], raw_state)
        else:
            base = _from_wait_status(raw_state, wait_status)
        status = attrs.evolve(base, reason=reason)
        for job_id in expand_job_id(fields[0]):
            statuses[job_id] = status
    return statuses


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """Parse ``sacct --parsable2`` output of JobID, State and ExitCode into statuses by job id.

    ExitCode reads ``code:signal``. Job steps (``123.batch``) are skipped. When a job appears more than
    once (a requeued job in job completion records), the last line wins.
    """
    statuses: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < 2 or "." in fields[0]:
            continue
        exit_code, signal = _exit_pair(fields[2] if len(fields) > 2 else "")
        status = JobStatus(JobState.from_slurm(fields[1]), exit_code, signal, fields[1])
        for job_id in expand_job_id(fields[0]):
            statuses[job_id] = status
    return statuses


def parse_scontrol_config(stdout: str) -> dict[str, str]:
    """Parse ``scontrol show config`` into a dict such as ``{"MinJobAge": "300 sec", ...}``."""
    config: dict[str, str] = {}
    for line in stdout.splitlines():
        match = _CONFIG_LINE.fullmatch(line.strip())
        if match:
            config[match.group(1)] = match.group(2).strip()
    return config


def is_invalid_job_id_error(stderr: str) -> bool:
    """True when a command failed because Slurm knows none of the job ids it was asked about.

    ``squeue`` does this once finished jobs have aged out of the controller (``MinJobAge``): the jobs
    should then be looked up with ``sacct``.
    """
    return "invalid job id" in stderr.lower()


def _split_columns(line: str) -> list[str]:
    if "|" not in line:
        return line.split()
    fields = [field.strip() for field in line.split("|")]
    return fields[:-1] if fields[-1] == "" else fields  # a trailing "|" ends the last field


def _from_wait_status(raw_state: str, wait_status: int | None) -> JobStatus:
    state = JobState.from_slurm(raw_state)
    if wait_status is None or not 0 <= wait_status <= 0xFFFF:
        return JobStatus(state, None, None, raw_state)  # e.g. -2: Slurm's "no value"
    return JobStatus(state, (wait_status >> 8) & 0xFF, wait_status & 0x7F, raw_state)


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    code, _, signal = text.partition(":")
    if not _INTEGER.fullmatch(code.strip()):
        return None, None
    return int(code), int(signal) if _INTEGER.fullmatch(signal.strip()) else None
