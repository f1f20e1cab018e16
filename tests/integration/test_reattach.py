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

from slurmbatch import SlurmSession, SubmissionError
from slurmbatch._journal import Journal
from slurmbatch._remote_layout import new_token
from slurmbatch.testing import ClusterSettings

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
