"""Listing the journal as ``slurmbatch jobs`` does: read-only, open sessions marked, plain errors."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from slurmbatch import JournalError
from slurmbatch._journal import Journal
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
