"""Real clients of SlurmExecutor: Dask, a Jupyter notebook, asyncio, trio, many threads, and exits.

Each client uses only what it would use with a standard library executor; the jobs run on the local
cluster.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch import JobSpec, SlurmExecutor
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark

from .conftest import login_shell, sdiag_count, session_options

pytestmark = pytest.mark.cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HELD = JobSpec(options={"hold": True})


def square(x: int) -> int:
    return x * x


def nap(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


# ------------------------------------------------------------------------------------------ Dask
def _distributions_needed(name: str, seen: set[str]) -> None:
    """``name`` and what it requires (without extras), recursively, as installed here."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    for requirement in importlib.metadata.requires(name) or ():
        if "extra ==" in requirement:
            continue
        wanted = re.match(r"[A-Za-z0-9_.-]+", requirement)
        if wanted is not None:
            try:
                _distributions_needed(wanted.group(0), seen)
            except importlib.metadata.PackageNotFoundError:
                continue  # a requirement for another Python version


@pytest.fixture(scope="module")
def dask_on_the_job_side() -> Iterator[JobSpec]:
    """A JobSpec whose jobs can import this client's dask, as a site that installed it would have.

    Dask sends its own functions (pickled by reference), so the job side needs dask. Its packages and
    their requirements are copied from this environment into a directory the job user can read (the
    login node is this machine); the job side's own cloudpickle stays.
    """
    needed: set[str] = set()
    _distributions_needed("dask", needed)
    needed.discard("cloudpickle")
    by_distribution: dict[str, list[str]] = {}
    for top, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            by_distribution.setdefault(re.sub(r"[-_.]+", "-", distribution).lower(), []).append(top)
    site = Path(tempfile.mkdtemp(prefix="slurmbatch-dask-", dir="/var/tmp"))
    try:
        for distribution in needed:
            for top in by_distribution.get(distribution, []):
                spec = importlib.util.find_spec(top)
                if spec is None or spec.origin in (None, "built-in"):
                    continue
                if spec.submodule_search_locations:
                    source = Path(next(iter(spec.submodule_search_locations)))
                    shutil.copytree(source, site / top, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(str(spec.origin), site)
        for path in [site, *site.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield JobSpec(variables={"PYTHONPATH": str(site)})
    finally:
        shutil.rmtree(site, ignore_errors=True)


def test_dask_delayed_and_bag_run_through_the_executor(
    slurm_cluster: ClusterSettings, dask_on_the_job_side: JobSpec
) -> None:
    # Test dependencies (the dev extra): missing, the test fails rather than skips.
    import dask
    import dask.bag as dask_bag

    @dask.delayed
    def inc(x: int) -> int:
        return x + 1

    @dask.delayed
    def total(*xs: int) -> int:
        return sum(xs)

    graph = total(*[inc(i) for i in range(4)])
    with SlurmExecutor("127.0.0.1", spec=dask_on_the_job_side, **session_options(slurm_cluster)) as ex:
        (value,) = dask.compute(graph, scheduler=ex)
        assert value == sum(range(1, 5))
        bag = dask_bag.from_sequence(range(6), npartitions=3).map(square)
        assert sorted(bag.compute(scheduler=ex)) == [i * i for i in range(6)]
        # The work went through Slurm jobs of this session.
        assert ex._loop._session._submitter.sbatch_calls >= 2


# ------------------------------------------------------------------------------------------ Jupyter
def test_a_notebook_uses_the_async_session_and_the_executor(
    slurm_cluster: ClusterSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import nbclient
    import nbformat

    options = json.dumps(session_options(slurm_cluster))
    cells = [
        f"import json\nfrom slurmbatch import SlurmExecutor, SlurmSession\noptions = json.loads({options!r})",
        "def cube(x):\n    return x ** 3",
        # Top-level await: the kernel's own event loop is running in this thread.
        "async with SlurmSession('127.0.0.1', **options) as session:\n"
        "    future = await session.submit(cube, (3,))\n"
        "    print('async', await future)",
        "with SlurmExecutor('127.0.0.1', **options) as ex:\n"
        "    print('sync', ex.submit(cube, 4).result(timeout=120))\n"
        "    print('map', list(ex.map(cube, range(3))))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    # The kernel is another process: it imports slurmbatch from this checkout.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2]))
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    printed = [
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        # stdout only: the kernel's stderr carries the warnings of whatever it imports
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    ]
    assert "".join(printed).splitlines() == ["async 27", "sync 64", "map [0, 1, 8]"]


# ------------------------------------------------------------------------------------------ asyncio / trio
def test_run_in_executor_inside_asyncio_run(slurm_cluster: ClusterSettings) -> None:
    async def main(ex: SlurmExecutor) -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(ex, square, x) for x in range(4))))

    with SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as ex:
        assert asyncio.run(main(ex)) == [0, 1, 4, 9]
        # Cancelling what awaits it cancels the job.
        held = ex.with_spec(HELD)

        async def cancelled() -> None:
            future = asyncio.get_running_loop().run_in_executor(held, held_square, 5)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(future, 3.0)

        asyncio.run(cancelled())
        assert wait_until(lambda: not any(n.startswith("held_square-") for n in job_names(slurm_cluster)))


def held_square(x: int) -> int:
    return x * x


def job_names(cluster: ClusterSettings) -> list[str]:
    return login_shell(cluster, "squeue -h -r -o %j").split()


def wait_until(condition: Any, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_an_executor_used_from_trio(slurm_cluster: ClusterSettings) -> None:
    import trio

    async def main(ex: SlurmExecutor) -> tuple[int, int]:
        future = ex.submit(square, 6)
        waited = await trio.to_thread.run_sync(future.result)
        return waited, ex.submit(square, 7).result(timeout=120)  # blocking trio's thread is allowed

    with SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as ex:
        assert trio.run(main, ex) == (36, 49)


# ------------------------------------------------------------------------------------------ threads
def test_a_thousand_submits_from_eight_threads_make_arrays_over_one_connection(
    slurm_cluster: ClusterSettings,
) -> None:
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    options = session_options(slurm_cluster, max_connections=1)
    with SlurmExecutor("127.0.0.1", spec=HELD, **options) as ex:
        rpcs_before = sdiag_count(slurm_cluster, "REQUEST_SUBMIT_BATCH_JOB")
        barrier = threading.Barrier(8)
        futures: list[list[Any]] = [[] for _ in range(8)]

        def submit_many(lane: int) -> None:
            barrier.wait()
            futures[lane].extend(ex.submit(square, lane * 1000 + i) for i in range(125))

        threads = [threading.Thread(target=submit_many, args=(lane,)) for lane in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [f for lane in futures for f in lane]
        job_ids = [f.wait_accepted(timeout=120) for f in every]
        sbatch_calls = ex._loop._session._submitter.sbatch_calls
        rpcs = sdiag_count(slurm_cluster, "REQUEST_SUBMIT_BATCH_JOB") - rpcs_before
        stats = ex._loop._session._pool.stats
        ex.shutdown(wait=False, cancel_futures=True)
    print(f"1000 submits from 8 threads: {sbatch_calls} sbatch calls, {rpcs} submit RPCs at slurmctld")
    assert len(set(job_ids)) == 1000
    arrays = {job_id.split("_")[0] for job_id in job_ids}
    # Coalesced: a few array jobs, not a thousand sbatch calls (each call is one RPC at slurmctld;
    # the count there also sees other users of the shared cluster, so it bounds from below).
    assert len(arrays) <= 50 and sbatch_calls == len(arrays)
    assert rpcs >= sbatch_calls
    assert stats.connections_opened == 1
    assert mark.logins() >= 1  # sshd saw it (and perhaps other people's logins)


# ------------------------------------------------------------------------------------------ exits
EXITING_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from slurmbatch import SlurmExecutor

    def nap(seconds, value):
        import time
        time.sleep(seconds)
        return value

    ex = SlurmExecutor("127.0.0.1", **json.loads(sys.argv[1]))
    future = ex.submit(nap, 8, "collected later")
    print(ex.session_id, future.wait_accepted(timeout=120), flush=True)
    # No shutdown, no with block: the interpreter exits with the job running.
    """
)


def test_exiting_without_shutdown_does_not_hang_and_leaves_the_job_to_reattach(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    options = session_options(slurm_cluster, journal=str(tmp_path / "journal.sqlite3"))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXITING_CLIENT, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    session_id, job_id = done.stdout.split()
    # It exited while the job ran (8 s of sleep), and said where the job went.
    assert time.monotonic() - started < 60
    assert "reattach" in done.stderr and session_id in done.stderr
    with SlurmExecutor("127.0.0.1", **options) as ex:
        (future,) = ex.reattach(session_id)
        assert future.job_id == job_id
        assert future.result(timeout=120) == "collected later"
        assert ex.reattach(session_id) == []


def test_a_collected_executor_finishes_its_jobs_then_closes(slurm_cluster: ClusterSettings) -> None:
    ex = SlurmExecutor("127.0.0.1", **session_options(slurm_cluster))
    loop = ex._loop
    (loop_thread,) = [t for t in threading.enumerate() if t.ident == loop._loop_thread]
    future = ex.submit(nap, 2, "still delivered")
    del ex
    gc.collect()
    assert future.result(timeout=120) == "still delivered"
    loop_thread.join(60)
    assert not loop_thread.is_alive() and loop.closed


INTERRUPTED_CLIENT = textwrap.dedent(
    """
    import json, sys
    from slurmbatch import SlurmExecutor

    def nap(seconds):
        import time
        time.sleep(seconds)

    ex = SlurmExecutor("127.0.0.1", **json.loads(sys.argv[1]))
    future = ex.submit(nap, 300)
    print(future.wait_accepted(timeout=120), flush=True)
    try:
        ex.shutdown(wait=True)  # Ctrl-C arrives while this waits for the job
    except KeyboardInterrupt:
        print("interrupted", future.cancelled(), flush=True)
    """
)


def test_ctrl_c_while_shutdown_waits_cancels_the_jobs(slurm_cluster: ClusterSettings) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_CLIENT, json.dumps(session_options(slurm_cluster))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        job_id = client.stdout.readline().strip()
        assert job_id, client.stderr.read() if client.stderr else ""
        time.sleep(1.0)  # into shutdown's wait
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=120)
    finally:
        client.kill()
    assert out.split() == ["interrupted", "True"], err
    assert wait_until(lambda: job_id not in login_shell(slurm_cluster, "squeue -h -r -o %i").split())
