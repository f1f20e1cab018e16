"""The journal: a new session, in this process or another, collects the jobs an earlier one left."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import cloudpickle
import pytest

from slurmbatch import ConnectError, SlurmSession, SubmissionError
from slurmbatch._journal import Journal
from slurmbatch._remote_layout import new_token
from slurmbatch.testing import ClusterSettings, LocalCluster

from .conftest import session_options
from .fault_table import ROWS, FaultRow
from .test_faults import duplicates_and_orphans

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# A client that submits 40 jobs (one array of 30, ten single jobs), prints its session id, then waits
# to be killed.
CLIENT = textwrap.dedent(
    """
    import json, sys, anyio
    from slurmbatch import SlurmSession

    def nap_square(i):
        import time
        time.sleep(4)
        return i * i

    async def main():
        async with SlurmSession("127.0.0.1", **json.loads(sys.argv[1])) as session:
            await session.map(nap_square, range(30))
            for i in range(30, 40):
                await session.submit(nap_square, (i,))
            print(session.id, flush=True)
            await anyio.sleep(3600)

    anyio.run(main)
    """
)


def square(i: int) -> int:
    time.sleep(2)
    return i * i


async def listening(port: int) -> None:
    """Wait until something accepts connections on ``port`` (a restarted sshd takes a moment)."""
    with anyio.fail_after(30):
        while True:
            try:
                await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                return
            except OSError:
                await anyio.sleep(0.1)


def late_square(i: int) -> int:
    time.sleep(10)
    return i * i


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_killed_mid_run_and_a_new_process_collects_every_result(
    slurm_cluster: ClusterSettings, tmp_path: Path, anyio_backend: str
) -> None:
    journal = tmp_path / "journal.sqlite3"
    options = session_options(slurm_cluster, journal=str(journal))
    start = functools.partial(
        subprocess.Popen,
        [sys.executable, "-c", CLIENT, json.dumps(options)],
        stdout=subprocess.PIPE,
        text=True,
    )
    client = await anyio.to_thread.run_sync(start)
    try:
        assert client.stdout is not None
        with anyio.fail_after(120):
            session_id = (await anyio.to_thread.run_sync(client.stdout.readline)).strip()
        assert session_id.startswith("session-"), session_id
    finally:
        os.kill(client.pid, signal.SIGKILL)  # no cleanup, no goodbye: what a crash or `kill -9` does
        client.wait()
    started = anyio.current_time()
    async with SlurmSession("127.0.0.1", **options) as session:
        futures = await session.reattach(session_id)
        assert len(futures) == 40
        results = [await f for f in futures]
        recovery = anyio.current_time() - started
        # Collected once: a second reattach finds nothing left.
        assert await session.reattach(session_id) == []
    assert sorted(results) == [i * i for i in range(40)]
    duplicates, orphaned = await duplicates_and_orphans(slurm_cluster, futures)
    ROWS.append(
        FaultRow(
            "client SIGKILLed; new process reattached",
            anyio_backend,
            40,
            len(results),
            duplicates,
            orphaned,
            recovery,
        )
    )
    assert (duplicates, orphaned) == (0, 0)


async def test_detached_jobs_are_collected_by_a_later_session(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    options = session_options(slurm_cluster, journal=tmp_path / "journal.sqlite3")
    async with SlurmSession("127.0.0.1", **options) as first:
        futures = await first.map(square, range(5))
        detached = first.detach()
    assert sorted(detached) == sorted(f.job_id for f in futures)
    async with SlurmSession("127.0.0.1", **options) as second:
        # Without an id: every earlier session on this login node and work directory.
        again = await second.reattach()
        assert sorted(f.job_id for f in again) == sorted(detached)
        assert [await f for f in again] == [i * i for i in range(5)]


async def test_a_job_whose_batch_never_ran_is_reported_not_resubmitted(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    options = session_options(slurm_cluster, journal=path)
    async with SlurmSession("127.0.0.1", **options) as session:
        layout = session._layout
    # What a process killed just before its submit command reached the login node leaves behind.
    crashed = await Journal.open(path, session="session-crashed")
    await crashed.register("127.0.0.1", layout.workdir)
    # A fence of its own per run: a recovery claims the fence it asks about, for good.
    await crashed.submitting([(new_token(), layout.fence(new_token()), None)])
    await crashed.close()
    async with SlurmSession("127.0.0.1", **options) as session:
        (future,) = await session.reattach("session-crashed")
        with pytest.raises(SubmissionError, match="never submitted"):
            await future
        assert session._submitter.sbatch_calls == 0


async def test_reattach_names_the_work_directory_it_needs(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    elsewhere = await Journal.open(path, session="session-elsewhere")
    await elsewhere.register("127.0.0.1", "/somewhere/else")
    await elsewhere.close()
    async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, journal=path)) as session:
        with pytest.raises(ValueError, match=r"remote_workdir='/somewhere/else'"):
            await session.reattach("session-elsewhere")
        with pytest.raises(ValueError, match="knows no session"):
            await session.reattach("session-unknown")


async def test_an_outage_past_the_deadline_loses_nothing_and_a_later_session_collects_the_jobs(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    port = local_cluster.start_sshd()  # a login node of its own, that this test takes away and brings back
    options = session_options(
        slurm_cluster, port=port, reconnect_deadline=3, journal=tmp_path / "journal.sqlite3"
    )
    try:
        async with SlurmSession("127.0.0.1", **options) as session:
            futures = await session.map(late_square, range(3))
            local_cluster.drop_ssh_connections(port)
            local_cluster.stop_daemon(f"sshd-{port}")
            for future in futures:
                with (
                    anyio.fail_after(60),
                    pytest.raises(ConnectError, match="may still be running") as caught,
                ):
                    await future
                assert f"reattach({session.id!r})" in str(caught.value)
                assert "reconnect_deadline=3" in str(caught.value)
    finally:
        local_cluster.restart_daemon(f"sshd-{port}")
    await listening(port)
    async with SlurmSession("127.0.0.1", **options) as later:
        # The journal kept them as not collected, and their remote files stayed.
        again = await later.reattach(session.id)
        assert sorted(f.job_id for f in again) == sorted(f.job_id for f in futures)
        with anyio.fail_after(120):
            assert sorted([await f for f in again]) == [0, 1, 4]


async def test_reattach_leaves_the_jobs_of_a_session_still_open_alone(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    options = session_options(slurm_cluster, journal=tmp_path / "journal.sqlite3")
    async with SlurmSession("127.0.0.1", **options) as first, SlurmSession("127.0.0.1", **options) as second:
        future = await first.submit(square, (3,))
        # The first session is open and follows its job: nothing of it is adopted.
        assert await second.reattach() == []
        with pytest.raises(ValueError, match="still open"):
            await second.reattach(first.id)
        assert await future == 9
