"""The local journal: what each session submitted, so that another process can pick its jobs up.

One SQLite file (stdlib ``sqlite3``, WAL mode) in the user's cache directory, shared by every session on
this machine. A job's row is written before its sbatch may run (state ``submitting``, with the fence of
its batch), updated with its job id once sbatch answered, and marked collected once its future is
resolved, before its result file is removed. A process killed at any point therefore leaves enough
behind for :meth:`SlurmSession.reattach` to find every job it had not collected, exactly once.

Every SQLite call runs in a worker thread, one at a time: a write waiting for another process's lock
(up to ``busy_timeout``) must not stall the event loop, which may be serving a whole Covalent server.

A session that has the journal open holds an exclusive lock (``flock``) on a file of its own next to
the journal, released by the kernel when its process ends however it ends. A session whose lock can be
taken is therefore not running, and only such sessions' jobs are adopted by another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import attrs

from ._errors import JournalError

__all__ = ["Journal", "JournalEntry", "default_journal_path", "job_columns", "session_is_running"]

T = TypeVar("T")

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
    updated REAL NOT NULL,
    submitted REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_session ON jobs (session, state);
CREATE TABLE IF NOT EXISTS attempts (token TEXT NOT NULL, job_id TEXT NOT NULL, PRIMARY KEY (token, job_id));
"""
# Columns added after the first release, with what fills them in a journal written before: (name, type,
# backfill). A job still in state 'submitted' was last updated when sbatch answered, so that is its
# submission time; for any other old row the time is not known and stays NULL.
_ADDED_COLUMNS = [
    ("submitted", "REAL", "UPDATE jobs SET submitted = updated WHERE state = 'submitted'"),
]


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
    """The journal file, open for one session. Writes commit at once; none waits for the network.

    The constructor opens the file (blocking: call :meth:`open` from async code); the other methods
    are coroutines that run their SQLite work in a worker thread. Raises :class:`JournalError`, naming
    the ``journal=`` setting, when the file cannot be created, opened or written.
    """

    def __init__(self, path: str | Path, *, session: str) -> None:
        self.path = Path(path).expanduser()
        self.session = session
        self._finished: list[tuple[str, str]] = []
        self._limiter: anyio.CapacityLimiter | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # isolation_level=None: each statement (or explicit BEGIN block) is its own transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot be created or opened", exc) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
            os.chmod(self.path, 0o600)
            self._lock = _hold_lock(self._lock_path(session))
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise self._error("cannot be written", exc) from exc

    @classmethod
    async def open(cls, path: str | Path, *, session: str) -> Journal:
        """Open (or create) the journal at ``path`` for ``session``, off the event loop."""
        return await anyio.to_thread.run_sync(lambda: cls(path, session=session))

    async def register(self, host: str, workdir: str) -> None:
        """Record this session's login node and remote work directory (once the session knows it)."""
        await self._call(
            self._db.execute,
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
            (self.session, host, workdir, time.time()),
        )

    async def close(self) -> None:
        """Write what is pending, close the file and let other sessions adopt this one's leftovers."""
        try:
            await self.flush()
        finally:
            await self._call(self._close)

    def _close(self) -> None:
        self._db.close()
        _release_lock(self._lock, self._lock_path(self.session))

    async def submitting(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Record ``(token, fence, source_file)`` rows before their batch may run."""
        now = time.time()
        await self._write(
            "INSERT OR REPLACE INTO jobs (token, session, fence, job_id, source_file, state, updated) "
            "VALUES (?, ?, ?, NULL, ?, 'submitting', ?)",
            [(token, self.session, fence, source, now) for token, fence, source in rows],
        )

    async def submitted(self, rows: Iterable[tuple[str, str]]) -> None:
        """Record the job ids sbatch gave: ``(token, job_id)`` rows."""
        now = time.time()
        rows = list(rows)
        await self._write(
            "UPDATE jobs SET job_id = ?, state = 'submitted', updated = ?, submitted = ? WHERE token = ?",
            [(job_id, now, now, token) for token, job_id in rows],
        )
        # Every job id a call was given, in order: a retried call keeps its token and gets a new id.
        await self._write("INSERT OR IGNORE INTO attempts VALUES (?, ?)", [(t, j) for t, j in rows])

    async def attempts(self, tokens: Sequence[str]) -> dict[str, list[str]]:
        """The job ids each of ``tokens`` was submitted as, oldest first."""
        found: dict[str, list[str]] = {}
        for start in range(0, len(tokens), 500):  # SQLite's limit on parameters of one statement
            chunk = list(tokens[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._query(
                f"SELECT token, job_id FROM attempts WHERE token IN ({marks}) ORDER BY rowid", chunk
            )
            for token, job_id in rows:
                found.setdefault(str(token), []).append(str(job_id))
        return found

    async def refused(self, tokens: Iterable[str]) -> None:
        """Forget jobs sbatch refused (or that were never sent): nothing of them runs."""
        await self._write("DELETE FROM jobs WHERE token = ?", [(t,) for t in tokens])

    def finished(self, token: str, state: str) -> None:
        """Note that a job's future was resolved; written by the next :meth:`flush`."""
        self._finished.append((state, token))

    async def flush(self) -> None:
        """Write the finished jobs noted since the last flush (before their result files go)."""
        if not self._finished:
            return
        done, self._finished = self._finished, []
        now = time.time()
        try:
            await self._write(
                "UPDATE jobs SET state = ?, updated = ? WHERE token = ?",
                [(state, now, token) for state, token in done],
            )
        except BaseException:
            # Cut short (e.g. the session ending under it): kept for the next flush, at close at the latest.
            self._finished[:0] = done
            raise

    async def uncollected(self, sessions: Sequence[str]) -> list[JournalEntry]:
        """The jobs of ``sessions`` whose futures were never resolved."""
        marks = ",".join("?" * len(sessions))
        rows = await self._query(
            f"SELECT token, fence, job_id, source_file FROM jobs WHERE session IN ({marks}) "
            "AND state IN ('submitting', 'submitted') ORDER BY rowid",
            list(sessions),
        )
        return [JournalEntry(*row) for row in rows]

    async def sessions_with_uncollected_jobs(self, host: str, workdir: str) -> list[str]:
        """Other sessions on the same login node and work directory that left jobs behind and are no
        longer running (a session still open, in this process or another, is skipped)."""
        rows = await self._query(
            "SELECT DISTINCT s.id FROM sessions s JOIN jobs j ON j.session = s.id "
            "WHERE s.host = ? AND s.workdir = ? AND s.id != ? AND j.state IN ('submitting', 'submitted') "
            "ORDER BY s.opened",
            (host, workdir, self.session),
        )
        sessions = [str(row[0]) for row in rows]
        alive = await self._call(lambda: {s for s in sessions if self._is_running(s)})
        return [s for s in sessions if s not in alive]

    async def is_running(self, session: str) -> bool:
        """Whether ``session`` has the journal open right now (in this process or another)."""
        return await self._call(self._is_running, session)

    async def adopt(self, tokens: Iterable[str]) -> None:
        """Move jobs of an earlier session into this one (a later reattach then finds them here)."""
        await self._write("UPDATE jobs SET session = ? WHERE token = ?", [(self.session, t) for t in tokens])

    async def workdir_of(self, session: str) -> str | None:
        """The remote work directory ``session`` used, or None if the journal does not know it."""
        rows = await self._query("SELECT workdir FROM sessions WHERE id = ?", (session,))
        return None if not rows else str(rows[0][0])

    # ------------------------------------------------------------------------------- internals
    def _lock_path(self, session: str) -> Path:
        return _lock_path(self.path, session)

    def _is_running(self, session: str) -> bool:
        return session == self.session or session_is_running(self.path, session)

    async def _write(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        if rows:
            await self._call(self._write_now, statement, rows)

    def _write_now(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        # BEGIN IMMEDIATE ... COMMIT: several sessions may share the file.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(statement, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def _query(self, statement: str, parameters: Sequence[object]) -> list[Any]:
        return await self._call(lambda: self._db.execute(statement, parameters).fetchall())

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        if self._limiter is None:  # made here, not in __init__: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(1)
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot be written", exc) from exc

    def _error(self, what: str, exc: BaseException) -> JournalError:
        return JournalError(
            f"The session journal {self.path} {what}: {exc}. Pass journal= a file path in a directory you "
            "can write to, or journal=False to run without a journal (then reattach() is not available)."
        )


def job_columns(db: sqlite3.Connection) -> set[str]:
    """The columns the ``jobs`` table of ``db`` has (a journal written by an older release lacks some)."""
    return {str(row[1]) for row in db.execute("PRAGMA table_info(jobs)")}


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns a journal written by an older release lacks, once, even with several processes
    opening it at the same time (the check is repeated under the write lock)."""
    if {name for name, _, _ in _ADDED_COLUMNS} <= job_columns(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        present = job_columns(db)
        for name, kind, backfill in _ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                db.execute(backfill)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _lock_path(journal: Path, session: str) -> Path:
    return journal.with_name(f"{journal.name}.sessions") / f"{session}.lock"


def session_is_running(journal: Path, session: str) -> bool:
    """Whether ``session`` has the journal at ``journal`` open right now, in any process."""
    try:
        with open(_lock_path(journal, session), "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False  # closed cleanly (or written before sessions held locks)


def _hold_lock(path: Path) -> IO[bytes]:
    """Open ``path`` and hold an exclusive lock on it for as long as the file stays open."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    file = open(path, "ab")  # noqa: SIM115 - held open until the session closes the journal
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        file.close()
        raise
    return file


def _release_lock(file: IO[bytes], path: Path) -> None:
    # Unlinked while still held: no other session can take a lock on the name in between.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    file.close()
