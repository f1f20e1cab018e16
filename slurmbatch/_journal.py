"""The local journal: what each session submitted, so that another process can pick its jobs up.

One SQLite file (stdlib ``sqlite3``, WAL mode) in the user's cache directory, shared by every session on
this machine. A job's row is written before its sbatch may run (state ``submitting``, with the fence of
its batch), updated with its job id once sbatch answered, and marked collected once its future is
resolved, before its result file is removed. A process killed at any point therefore leaves enough
behind for :meth:`SlurmSession.reattach` to find every job it had not collected, exactly once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

__all__ = ["Journal", "JournalEntry", "default_journal_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, workdir TEXT NOT NULL, opened REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    token TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    fence TEXT NOT NULL,
    job_id TEXT,
    source_file TEXT,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_session ON jobs (session, state);
"""


def default_journal_path() -> Path:
    """``$XDG_CACHE_HOME/slurmbatch/journal.sqlite3`` (``~/.cache/...`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "slurmbatch" / "journal.sqlite3"


@attrs.frozen
class JournalEntry:
    """One job of an earlier session that was not collected."""

    token: str
    fence: str
    job_id: str | None  # None: its batch may or may not have run when the process stopped
    source_file: str | None


class Journal:
    """The journal file, open for one session. Writes commit at once; none waits for the network."""

    def __init__(self, path: str | Path, *, session: str, host: str, workdir: str) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.session = session
        # isolation_level=None: each statement (or explicit BEGIN block) is its own transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)", (session, host, workdir, time.time())
        )
        self._finished: list[tuple[str, str]] = []

    def close(self) -> None:
        self.flush()
        self._db.close()

    def submitting(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Record ``(token, fence, source_file)`` rows before their batch may run."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, NULL, ?, 'submitting', ?)",
                [(token, self.session, fence, source, now) for token, fence, source in rows],
            )

    def submitted(self, rows: Iterable[tuple[str, str]]) -> None:
        """Record the job ids sbatch gave: ``(token, job_id)`` rows."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "UPDATE jobs SET job_id = ?, state = 'submitted', updated = ? WHERE token = ?",
                [(job_id, now, token) for token, job_id in rows],
            )

    def refused(self, tokens: Iterable[str]) -> None:
        """Forget jobs sbatch refused (or that were never sent): nothing of them runs."""
        with self._transaction():
            self._db.executemany("DELETE FROM jobs WHERE token = ?", [(t,) for t in tokens])

    def finished(self, token: str, state: str) -> None:
        """Note that a job's future was resolved; written by the next :meth:`flush`."""
        self._finished.append((state, token))

    def flush(self) -> None:
        """Write the finished jobs noted since the last flush (before their result files go)."""
        if not self._finished:
            return
        done, self._finished = self._finished, []
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "UPDATE jobs SET state = ?, updated = ? WHERE token = ?",
                [(state, now, token) for state, token in done],
            )

    def uncollected(self, sessions: Sequence[str]) -> list[JournalEntry]:
        """The jobs of ``sessions`` whose futures were never resolved."""
        marks = ",".join("?" * len(sessions))
        rows = self._db.execute(
            f"SELECT token, fence, job_id, source_file FROM jobs WHERE session IN ({marks}) "
            "AND state IN ('submitting', 'submitted') ORDER BY rowid",
            list(sessions),
        ).fetchall()
        return [JournalEntry(*row) for row in rows]

    def sessions_with_uncollected_jobs(self, host: str, workdir: str) -> list[str]:
        """Other sessions on the same login node and work directory that left jobs behind."""
        rows = self._db.execute(
            "SELECT DISTINCT s.id FROM sessions s JOIN jobs j ON j.session = s.id "
            "WHERE s.host = ? AND s.workdir = ? AND s.id != ? AND j.state IN ('submitting', 'submitted') "
            "ORDER BY s.opened",
            (host, workdir, self.session),
        ).fetchall()
        return [row[0] for row in rows]

    def adopt(self, tokens: Iterable[str]) -> None:
        """Move jobs of an earlier session into this one (a later reattach then finds them here)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE jobs SET session = ? WHERE token = ?", [(self.session, t) for t in tokens]
            )

    def workdir_of(self, session: str) -> str | None:
        row = self._db.execute("SELECT workdir FROM sessions WHERE id = ?", (session,)).fetchone()
        return None if row is None else str(row[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``): several sessions may share the file."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
