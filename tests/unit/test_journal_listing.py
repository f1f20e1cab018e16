"""Listing the journal as ``slurmbatch jobs`` does: read-only, open sessions marked, plain errors."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from slurmbatch import JournalError
from slurmbatch._journal import Journal, job_columns
from slurmbatch._journal_listing import find_job, list_jobs, session_row


def write_journal(path: Path) -> Journal:
    async def write() -> Journal:
        old = await Journal.open(path, session="session-old")
        await old.register("login.example.org", "/home/me/sb")
        await old.submitting([("sb-a", "f1", None), ("sb-b", "f1", None)])
        await old.submitted([("sb-a", "101"), ("sb-b", "102")])
        old.finished("sb-a", "COMPLETED")
        await old.close()
        live = await Journal.open(path, session="session-live")
        await live.register("login.example.org", "/home/me/sb")
        await live.submitting([("sb-c", "f2", None)])
        await live.submitted([("sb-c", "103")])
        return live

    return anyio.run(write)


def test_uncollected_jobs_by_default_and_all_on_request(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    live = write_journal(path)
    try:
        rows = list_jobs(path)
        assert [(r.job_id, r.state, r.running) for r in rows] == [
            ("102", "submitted", False),
            ("103", "submitted", True),
        ]
        every = list_jobs(path, include_collected=True)
        assert {r.job_id for r in every} == {"101", "102", "103"}
        assert [r.job_id for r in list_jobs(path, session="session-old", include_collected=True)] == [
            "101",
            "102",
        ]
        assert find_job(path, "101").collected and find_job(path, "101").token == "sb-a"
        assert session_row(path, "session-old") == ("login.example.org", "/home/me/sb")
    finally:
        anyio.run(live.close)
    assert not list_jobs(path, session="session-live")[0].running


def test_unknown_names_and_a_missing_journal_are_journal_errors(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with pytest.raises(JournalError, match="no journal at"):
        list_jobs(path)
    assert not path.exists()  # listing never creates it
    anyio.run(write_journal(path).close)
    with pytest.raises(JournalError, match="knows no job 999"):
        find_job(path, "999")
    with pytest.raises(JournalError, match="knows no session 'session-x'"):
        session_row(path, "session-x")


# The journal's tables as the first release wrote them, before jobs had a submission time.
FIRST_RELEASE_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, host TEXT NOT NULL, workdir TEXT NOT NULL, opened REAL NOT NULL);
CREATE TABLE jobs (
    token TEXT PRIMARY KEY, session TEXT NOT NULL, fence TEXT NOT NULL, job_id TEXT, source_file TEXT,
    state TEXT NOT NULL, updated REAL NOT NULL
);
CREATE INDEX jobs_by_session ON jobs (session, state);
INSERT INTO sessions VALUES ('session-old', 'login.example.org', '/home/me/sb', 1000.0);
INSERT INTO jobs VALUES ('sb-a', 'session-old', 'f1', '101', NULL, 'COMPLETED', 1300.0);
INSERT INTO jobs VALUES ('sb-b', 'session-old', 'f1', '102', NULL, 'submitted', 1200.0);
INSERT INTO jobs VALUES ('sb-c', 'session-old', 'f1', NULL, NULL, 'submitting', 1100.0);
"""


def write_first_release_journal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(FIRST_RELEASE_SCHEMA)
    db.commit()
    db.close()


def test_submission_times_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    before = time.time()
    live = write_journal(path)
    anyio.run(live.close)
    rows = {r.job_id: r for r in list_jobs(path, include_collected=True)}
    assert all(r.submitted is not None and before <= r.submitted <= time.time() for r in rows.values())
    # A collected job keeps when it was submitted; updated moves on to when it was collected.
    assert rows["101"].submitted is not None and rows["101"].submitted <= rows["101"].updated


def test_a_journal_of_the_first_release_lists_read_only_without_submission_times(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    write_first_release_journal(path)
    rows = list_jobs(path, include_collected=True)
    assert [(r.job_id, r.state, r.submitted) for r in rows] == [
        ("101", "COMPLETED", None),
        ("102", "submitted", None),
        (None, "submitting", None),
    ]
    db = sqlite3.connect(path)
    assert "submitted" not in job_columns(db)  # listing only reads: it does not migrate
    db.close()


def test_a_journal_of_the_first_release_is_migrated_when_a_session_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    write_first_release_journal(path)

    async def reopen() -> list[str]:
        journal = await Journal.open(path, session="session-old")
        left = [entry.token for entry in await journal.uncollected(["session-old"])]
        await journal.submitting([("sb-d", "f2", None)])
        await journal.submitted([("sb-d", "104")])
        await journal.close()
        return left

    assert anyio.run(reopen) == ["sb-b", "sb-c"]  # the old rows are still found for reattach
    rows = {r.token: r for r in list_jobs(path, include_collected=True)}
    # A job still 'submitted' was last updated when sbatch answered; the others' times are unknown.
    assert rows["sb-b"].submitted == 1200.0
    assert rows["sb-a"].submitted is None and rows["sb-c"].submitted is None
    assert rows["sb-d"].submitted is not None and rows["sb-d"].job_id == "104"

    async def open_again() -> None:  # a journal migrated already opens as it is
        await (await Journal.open(path, session="session-again")).close()

    anyio.run(open_again)
    assert list_jobs(path, include_collected=True)[1].submitted == 1200.0
