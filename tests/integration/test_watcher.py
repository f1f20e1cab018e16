"""Push completion: the result watcher on the login node, and the line stream it runs on.

Against the real local cluster, under asyncio and trio. No timing is asserted beyond generous bounds:
latency is measured by ``python -m benchmarks.latency`` (the P3 selection of the compare harness).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.streams.text
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobSpec, JobState, SlurmSession
from slurmbatch._errors import ConnectError
from slurmbatch._watcher import PROGRAM_NAME, watch_command
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.transport import SSHPool

from .conftest import login_shell
from .test_transport import kill_serving_sshd, remote_pids, settings_for, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nap(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def job_info_rpcs(cluster: ClusterSettings) -> int:
    """Job-info RPCs slurmctld has served (REQUEST_JOB_INFO and its _SINGLE variant), from sdiag."""
    return sum(
        int(line.split("count:")[1].split()[0])
        for line in login_shell(cluster, "sdiag").splitlines()
        if line.strip().startswith("REQUEST_JOB_INFO")
    )


def watcher_pattern(cluster: ClusterSettings) -> str:
    """A pgrep/pkill pattern for this cluster's watchers that does not match the pkill command itself."""
    return f"[{PROGRAM_NAME[0]}]{PROGRAM_NAME[1:]} {cluster.remote_workdir}/results"


async def wait_watching(session: SlurmSession) -> None:
    with anyio.fail_after(30):
        while not session._poller.watcher.up:  # noqa: ASYNC110 - no event to wait on, by design
            await anyio.sleep(0.05)


# --------------------------------------------------------------------------------------------- the program


async def test_watch_program_reports_changes_and_beats(tmp_path: Path) -> None:
    """The remote program itself, run here with the local sh (dash on Debian, as on most login nodes)."""
    (tmp_path / "before.pkl").write_bytes(b"")
    command = watch_command(str(tmp_path), interval=0.05, heartbeat=0.2)
    async with await anyio.open_process(["sh", "-c", command]) as process:
        assert process.stdout is not None
        stream = anyio.streams.text.TextReceiveStream(process.stdout)
        seen = ""

        async def read_until(text: str, start: int = 0) -> None:
            nonlocal seen
            with anyio.fail_after(10):
                while text not in seen[start:]:
                    seen += await stream.receive()

        await read_until("+before.pkl\n.\n")  # the first listing names what is there already
        (tmp_path / ".sb-x.pkl.abc.tmp").write_bytes(b"")  # the runner's temporary file: ignored
        (tmp_path / "partial.tmp").write_bytes(b"")
        await anyio.sleep(0.3)
        (tmp_path / "sb-x.pkl").write_bytes(b"")
        (tmp_path / "before.pkl").unlink()
        await read_until("-before.pkl\n")
        await read_until(".\n.\n.\n", seen.index("-before.pkl"))  # that listing's end, then heartbeats
        process.terminate()
    lines = seen.splitlines()
    assert lines[:2] == ["+before.pkl", "."]
    assert {"+sb-x.pkl", "-before.pkl"} <= set(lines)
    assert not [line for line in lines if "tmp" in line]


# --------------------------------------------------------------------------------------------- the session


async def test_results_arrive_without_scheduler_queries(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    # An interval far beyond the test: after its first query, the poller never asks the scheduler.
    options = {**session_kwargs, "status_interval": (600.0, 600.0)}
    async with SlurmSession("127.0.0.1", **options) as session:
        await wait_watching(session)
        rpcs_before = job_info_rpcs(slurm_cluster)
        futures = [
            await session.submit(nap, (0.5, i), JobSpec(options={"no-requeue": True})) for i in range(4)
        ]
        futures += await session.map(nap, [0.2] * 20, range(100, 120))
        with anyio.fail_after(60):
            values = [await f for f in futures]
        assert values == [0, 1, 2, 3, *range(100, 120)]
        assert all(f.state is JobState.COMPLETED for f in futures)
        poller = session._poller
        assert poller.scheduler_queries <= 2  # the first, right after the first submit (and a spare)
        assert poller.ticks == 0  # no listing of our own: the watcher never went down
        assert poller.watcher.starts == 1
        assert poller.collections <= len(futures)
    # The first query plus the sdiag calls themselves; never one per job.
    assert job_info_rpcs(slurm_cluster) - rpcs_before <= 3


async def test_a_few_results_and_outputs_are_read_without_an_sftp_session(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    # A new SFTP session costs several round trips before its first read: a lone result, or a job's
    # output, comes back over one framed command. sshd logs each channel's session and what runs there.
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        assert await (await session.submit(nap, (0.0, -1))) == -1  # uploads the runner and the function
        await wait_watching(session)
        mark = SshdLogMark.now(slurm_cluster.sshd_log)
        for i in range(3):
            with anyio.fail_after(60):
                future = await session.submit(nap, (0.0, i))
                assert await future == i
                assert await future.stderr() == ""
        assert session._poller.collections >= 3
        log = mark.text()
        assert log.count("Starting session: command") >= 6  # a submit and a read per job, at least
        assert "Starting session: subsystem 'sftp'" not in log


async def test_killed_watcher_is_restarted_and_nothing_is_missed(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    options = {**session_kwargs, "status_interval": (600.0, 600.0)}
    async with SlurmSession("127.0.0.1", **options) as session:
        await wait_watching(session)
        assert remote_pids(slurm_cluster, watcher_pattern(slurm_cluster))
        futures = await session.map(nap, [1.0] * 12, range(12))
        # Keep killing it while the jobs finish, so that results land while no watcher runs.
        kills = 0
        with anyio.move_on_after(5):
            while not all(f.done() for f in futures):
                kill = f"pkill -f {watcher_pattern(slurm_cluster)!r} || true"
                await anyio.to_thread.run_sync(login_shell, slurm_cluster, kill)
                kills += 1
                await anyio.sleep(0.3)
        with anyio.fail_after(60):
            assert [await f for f in futures] == list(range(12))
        watcher = session._poller.watcher
        assert kills >= 1
        assert watcher.starts >= 2
        await wait_watching(session)  # and it comes back for good
    with anyio.fail_after(10):
        while remote_pids(slurm_cluster, watcher_pattern(slurm_cluster)):  # noqa: ASYNC110
            await anyio.sleep(0.1)  # the session closed its channel: the program ends


async def test_job_ended_without_result_is_reported_by_the_scheduler(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(nap, (300, 0))
        with anyio.fail_after(30):
            while future.state is not JobState.RUNNING:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        queries = session._poller.scheduler_queries
        login_shell(slurm_cluster, f"scancel {future.job_id}")  # from outside, as an admin would
        with anyio.fail_after(60), pytest.raises(JobCancelled):
            await future
        assert future.state is JobState.CANCELLED
        assert session._poller.scheduler_queries > queries
        assert session._poller.watcher.starts == 1


async def test_a_single_channel_pool_lists_results_itself(session_kwargs: dict[str, Any]) -> None:
    # The watcher would hold the only channel for good: the loop lists W/results itself instead.
    options = {**session_kwargs, "max_connections": 1, "max_channels": 1}
    async with SlurmSession("127.0.0.1", **options) as session:
        futures = await session.map(nap, [0.1] * 3, range(3))
        with anyio.fail_after(60):
            assert [await f for f in futures] == [0, 1, 2]
        assert session._poller.watcher.starts == 0
        assert session._poller.ticks >= 1


# --------------------------------------------------------------------------------------------- the line stream


async def test_stream_yields_lines_and_the_exit_status(slurm_cluster: ClusterSettings) -> None:
    async with SSHPool(settings_for(slurm_cluster), max_connections=1) as pool:
        async with pool.stream("printf 'one\\ntwo\\n\\nlast'; echo oops >&2; exit 3") as lines:
            assert pool.stats.channels_in_use == 1
            assert [line async for line in lines] == ["one", "two", "", "last"]
            assert lines.exit_status == 3
        assert pool.stats.channels_in_use == 0


async def test_a_cancelled_wait_for_a_line_loses_nothing(slurm_cluster: ClusterSettings) -> None:
    pool = SSHPool(settings_for(slurm_cluster), max_connections=1)
    async with pool, pool.stream("echo a; sleep 1; echo b; echo c") as lines:
        assert await anext(lines) == "a"
        with anyio.move_on_after(0.2) as waited:
            await anext(lines)
        assert waited.cancelled_caught
        assert [line async for line in lines] == ["b", "c"]


async def test_leaving_a_stream_stops_its_remote_command(slurm_cluster: ClusterSettings) -> None:
    marker = f"sb-stream-{time.monotonic_ns()}"
    async with SSHPool(settings_for(slurm_cluster), max_connections=1) as pool:
        with anyio.move_on_after(1):
            async with pool.stream(f"exec sh -c 'while :; do echo tick; sleep 0.1; done' {marker}") as lines:
                async for _ in lines:
                    pass
        assert pool.stats.channels_in_use == 0
        await wait_until(lambda: not remote_pids(slurm_cluster, marker))
        # The pool is intact: the channel was given back.
        assert (await pool.run("echo fine")).stdout == "fine\n"


async def test_a_dropped_connection_ends_a_stream_with_connect_error(slurm_cluster: ClusterSettings) -> None:
    async with SSHPool(settings_for(slurm_cluster), max_connections=1) as pool:
        with pytest.raises(ConnectError, match="was lost while"):
            async with pool.stream("while :; do echo tick; sleep 0.1; done") as lines:
                assert await anext(lines) == "tick"
                await kill_serving_sshd(pool)
                with anyio.fail_after(10):
                    async for _ in lines:
                        pass
        assert (await pool.run("echo fine")).stdout == "fine\n"


async def test_an_idle_session_pauses_its_watcher(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("ERROR", logger="slurmbatch")
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        session._poller._watch_idle = 0.5  # instead of 30 s, from the next idle period on
        assert await (await session.submit(nap, (0.1, 1))) == 1
        pattern = watcher_pattern(slurm_cluster)
        with anyio.fail_after(10):
            while session._poller.watcher.up or remote_pids(slurm_cluster, pattern):  # noqa: ASYNC110
                await anyio.sleep(0.1)
        # The next job resumes it.
        assert await (await session.submit(nap, (0.1, 2))) == 2
        assert session._poller.watcher.starts == 2
        assert session._poller.ticks == 0
    # Pausing is no failure of the status loop.
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
