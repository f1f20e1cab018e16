"""The local journal: plain errors for a bad location, no stalled event loop, live sessions left alone."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import anyio
import pytest

from slurmbatch import JournalError, SlurmSession
from slurmbatch._journal import Journal

pytestmark = pytest.mark.anyio


async def test_a_journal_under_a_file_names_the_journal_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(JournalError, match="journal=") as caught:
        await Journal.open(blocker / "journal.sqlite3", session="session-x")
    assert str(blocker) in str(caught.value)


async def test_a_journal_path_that_is_a_directory_names_the_journal_setting(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="journal=False"):
        await Journal.open(tmp_path, session="session-x")


async def test_a_session_with_an_unwritable_journal_fails_before_connecting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    # The host does not exist: the journal is checked first, so the error is about the journal.
    session = SlurmSession("login.invalid", ssh_config=(), journal=blocker / "journal.sqlite3")
    with pytest.raises(JournalError, match="journal="):
        async with session:
            pass


async def test_a_write_waiting_for_another_process_lock_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path, session="session-a")
    await journal.register("login", "/w")
    # Another writer holds the database for a second and a half.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.5, lambda: other.execute("COMMIT"))
    release.start()
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = anyio.current_time()
        while True:
            await anyio.sleep(0.02)
            now = anyio.current_time()
            gaps.append(now - last)
            last = now

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            started = anyio.current_time()
            await journal.submitting([("sb-1", "/w/fence", None)])
            waited = anyio.current_time() - started
            tg.cancel_scope.cancel()
    finally:
        release.join()
        other.close()
    assert waited >= 1.0, waited  # it did wait for the lock...
    assert max(gaps) < 0.5, max(gaps)  # ...without blocking the loop meanwhile
    assert [e.token for e in await journal.uncollected(["session-a"])] == ["sb-1"]
    await journal.close()


LIVE_SESSION = textwrap.dedent(
    """
    import sys, anyio
    from slurmbatch._journal import Journal

    async def main():
        journal = await Journal.open(sys.argv[1], session="session-alive")
        await journal.register("login", "/w")
        await journal.submitting([("sb-alive", "/w/fence-alive", None)])
        print("open", flush=True)
        sys.stdin.readline()  # until told to end
        await journal.close()

    anyio.run(main)
    """
)


def start_live_session(path: Path) -> subprocess.Popen[str]:
    """Another process with a session open in the journal at ``path``, until a line arrives on its stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", LIVE_SESSION, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_reattach_without_an_id_skips_a_session_still_open_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    ended = await Journal.open(path, session="session-ended")
    await ended.register("login", "/w")
    await ended.submitting([("sb-ended", "/w/fence-ended", None)])
    await ended.close()
    alive = await anyio.to_thread.run_sync(start_live_session, path)
    try:
        assert alive.stdout is not None and alive.stdin is not None
        assert (await anyio.to_thread.run_sync(alive.stdout.readline)).strip() == "open"
        mine = await Journal.open(path, session="session-mine")
        await mine.register("login", "/w")
        assert await mine.sessions_with_uncollected_jobs("login", "/w") == ["session-ended"]
        assert await mine.is_running("session-alive")
        assert not await mine.is_running("session-ended")
        alive.stdin.write("end\n")
        alive.stdin.flush()
        await anyio.to_thread.run_sync(alive.wait)
        # It ended without its jobs being collected: now they may be adopted.
        assert await mine.sessions_with_uncollected_jobs("login", "/w") == ["session-ended", "session-alive"]
        await mine.close()
    finally:
        alive.kill()
        alive.wait()


async def test_a_killed_process_releases_its_session(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    alive = await anyio.to_thread.run_sync(start_live_session, path)
    assert alive.stdout is not None
    assert (await anyio.to_thread.run_sync(alive.stdout.readline)).strip() == "open"
    mine = await Journal.open(path, session="session-mine")
    assert await mine.is_running("session-alive")
    alive.kill()  # no goodbye: the kernel drops its lock
    await anyio.to_thread.run_sync(alive.wait)
    assert not await mine.is_running("session-alive")
    await mine.close()


async def test_every_attempt_of_a_retried_call_is_kept_and_only_the_latest_is_uncollected(
    tmp_path: Path,
) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3", session="s1")
    try:
        await journal.submitting([("sb-a", "fence-1", None)])
        await journal.submitted([("sb-a", "101")])
        # The retry: the same token, a new fence, then a new job id.
        await journal.submitting([("sb-a", "fence-2", None)])
        (pending,) = await journal.uncollected(["s1"])
        assert (pending.fence, pending.job_id) == ("fence-2", None)  # looked up by its fence
        await journal.submitted([("sb-a", "102")])
        (entry,) = await journal.uncollected(["s1"])
        assert (entry.token, entry.job_id) == ("sb-a", "102")
        assert await journal.attempts(["sb-a", "sb-b"]) == {"sb-a": ["101", "102"]}
    finally:
        await journal.close()
