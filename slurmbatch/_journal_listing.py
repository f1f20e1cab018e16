"""Reading the local journal without opening a session: what ``slurmbatch jobs`` lists.

Read-only (SQLite's ``mode=ro``): listing never creates the file, never takes a session's lock, and
never waits on a session that is writing (WAL readers do not block writers, nor writers readers).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs

from ._errors import JournalError
from ._journal import job_columns, session_is_running

__all__ = ["JournalRow", "find_job", "list_jobs", "session_row"]

_SELECT = (
    "SELECT s.id, s.host, s.workdir, s.opened, j.token, j.job_id, j.state, {submitted}, j.updated "
    "FROM jobs j JOIN sessions s ON s.id = j.session"
)
_UNCOLLECTED = ("submitting", "submitted")


@attrs.frozen
class JournalRow:
    """One job as the journal records it, with its session's login node and work directory.

    ``state`` is ``submitting`` (its sbatch may not have run), ``submitted`` (not collected yet), or the
    end state its future got (``COMPLETED``, ``FAILED``, ...) once collected. ``submitted`` is when sbatch
    accepted it (seconds since the epoch), None while it is ``submitting`` or when a journal written by an
    older release did not record it. ``running`` tells whether its session is open right now, in any process.
    """

    session: str
    host: str
    workdir: str
    opened: float
    token: str
    job_id: str | None
    state: str
    submitted: float | None
    updated: float
    running: bool

    @property
    def collected(self) -> bool:
        """Whether the job's future was resolved (its result fetched, or its end state known)."""
        return self.state not in _UNCOLLECTED


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise JournalError(
            f"There is no journal at {path}: no session with a journal has run on this machine as this "
            "user yet. Run one (e.g. the demo), or pass --journal the file a session wrote."
        )
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"The journal {path} cannot be opened for reading: {exc}.") from exc


def _rows(path: Path, where: str, parameters: tuple[object, ...]) -> list[JournalRow]:
    db = _connect(path)
    try:
        # Read-only, so an older journal is not migrated here: its jobs' submission times are unknown.
        submitted = "j.submitted" if "submitted" in job_columns(db) else "NULL"
        select = _SELECT.format(submitted=submitted)
        found = db.execute(f"{select} {where} ORDER BY s.opened, j.rowid", parameters).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"The journal {path} cannot be read: {exc}.") from exc
    finally:
        db.close()
    running: dict[str, bool] = {}
    rows = []
    for session, host, workdir, opened, token, job_id, state, submitted_at, updated in found:
        if session not in running:
            running[session] = session_is_running(path, session)
        rows.append(
            JournalRow(
                session, host, workdir, opened, token, job_id, state, submitted_at, updated, running[session]
            )
        )
    return rows


def list_jobs(path: Path, *, session: str | None = None, include_collected: bool = False) -> list[JournalRow]:
    """The jobs of the journal at ``path``, oldest session first: those not collected yet, or all."""
    conditions, parameters = [], []
    if session is not None:
        conditions.append("s.id = ?")
        parameters.append(session)
    if not include_collected:
        conditions.append("j.state IN ('submitting', 'submitted')")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return _rows(path, where, tuple(parameters))


def find_job(path: Path, job_id: str) -> JournalRow:
    """The journal's row of Slurm job ``job_id``, or a :class:`JournalError` that says it has none."""
    rows = _rows(path, "WHERE j.job_id = ?", (job_id,))
    if not rows:
        raise JournalError(
            f"The journal {path} knows no job {job_id}: only jobs submitted by slurmbatch sessions of this "
            "user on this machine are there (`slurmbatch jobs --all` lists them)."
        )
    return rows[-1]


def session_row(path: Path, session: str) -> tuple[str, str]:
    """``(host, workdir)`` of ``session``, or a :class:`JournalError` that says the journal has no such session."""
    db = _connect(path)
    try:
        found = db.execute("SELECT host, workdir FROM sessions WHERE id = ?", (session,)).fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"The journal {path} cannot be read: {exc}.") from exc
    finally:
        db.close()
    if found is None:
        raise JournalError(
            f"The journal {path} knows no session {session!r}: `slurmbatch jobs --all` lists the sessions it has."
        )
    return str(found[0]), str(found[1])
