"""Leaving the block: nothing submitted escapes it, caps on cancelling hold, a refused map leaves nothing.

A slow or refusing ``sbatch`` is made real: a wrapper first on the login node's PATH (through
``slurm_setup``), which sleeps or refuses, then runs the real sbatch, found with ``command -v`` before
the PATH changed.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, JobSpec, RpcBudget, SessionClosedError, SlurmSession, SubmissionError
from slurmbatch._remote_layout import new_token
from slurmbatch.testing import ClusterSettings

from .conftest import login_shell

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SBATCH_DELAY = 3  # seconds the slow wrapper sleeps before it runs the real sbatch


def add(a: int, b: int) -> int:
    return a + b


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


class Boom(RuntimeError):
    """What the user's code raised inside the block."""


@pytest.fixture
def wrapper_dir() -> Iterator[Path]:
    """A directory the job user can read (and write, for the wrapper's own state)."""
    path = Path(tempfile.mkdtemp(prefix="sb-wrapper-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def sbatch_wrapper(directory: Path, body: str) -> list[str]:
    """``slurm_setup`` lines that put an ``sbatch`` running ``body`` (then the real one) first on PATH."""
    script = directory / "sbatch"
    script.write_text(f'#!/bin/sh\n{body}\nexec "$SB_REAL_SBATCH" "$@"\n')
    script.chmod(0o755)
    return ["SB_REAL_SBATCH=$(command -v sbatch); export SB_REAL_SBATCH", f"export PATH={directory}:$PATH"]


def queued(cluster: ClusterSettings, job_name: str) -> list[str]:
    """Ids of the jobs named ``job_name`` that are pending or running."""
    lines = login_shell(cluster, "squeue -h -o '%i %j'").splitlines()
    return [line.split()[0] for line in lines if line.split()[1:] == [job_name]]


def options_with(session_kwargs: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**session_kwargs, **more}


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_a_map_still_being_submitted_when_the_block_ends_leaves_no_job_behind(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], wrapper_dir: Path, how: str
) -> None:
    setup = sbatch_wrapper(wrapper_dir, f"sleep {SBATCH_DELAY}")
    name = f"escapee-{new_token()}"
    held = JobSpec(job_name=name, options={"hold": True})  # held: an escaped job stays queued for good
    started = 0.0
    with anyio.fail_after(60), anyio.CancelScope() as outer:
        try:
            options = options_with(session_kwargs, slurm_setup=setup)
            async with SlurmSession("127.0.0.1", **options) as session, anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(session.map, add, range(5), range(5), spec=held))
                started = anyio.current_time()
                await anyio.sleep(1.0)  # the map's sbatch is now sleeping on the login node
                if how == "cancel":
                    outer.cancel()
                    await anyio.sleep_forever()
                raise Boom("the user's code failed")
        except ExceptionGroup as group:
            assert how == "error" and group.subgroup(Boom) is not None
    assert outer.cancelled_caught == (how == "cancel")
    # Long enough for the wrapper to have run the real sbatch, whatever the session did.
    await anyio.sleep(max(0.0, started + SBATCH_DELAY + 1.5 - anyio.current_time()))
    assert queued(slurm_cluster, name) == []


async def test_a_submission_cut_short_by_its_caller_is_waited_for_at_a_normal_exit(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], wrapper_dir: Path
) -> None:
    setup = sbatch_wrapper(wrapper_dir, f"sleep {SBATCH_DELAY}")
    name = f"tracked-{new_token()}"
    async with SlurmSession("127.0.0.1", **options_with(session_kwargs, slurm_setup=setup)) as session:
        with anyio.move_on_after(1.0) as waiting:
            await session.submit(nap, (3,), JobSpec(job_name=name))
        assert waiting.cancelled_caught  # the caller gave up; the job is still submitted
    # The block waited for the submission, then for the job it made, to its end.
    assert queued(slurm_cluster, name) == []
    assert session._poller.live() == []
    assert session._submitter.sbatch_calls == 1


async def test_submits_queued_or_under_way_fail_plainly_when_the_session_is_cancelled(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], wrapper_dir: Path
) -> None:
    setup = sbatch_wrapper(wrapper_dir, f"sleep {SBATCH_DELAY}")
    name = f"queued-{new_token()}"
    held = JobSpec(job_name=name, options={"hold": True})
    opened = anyio.Event()
    holder: dict[str, Any] = {}
    outcomes: list[BaseException | None] = []

    async def own_the_session() -> None:
        with anyio.CancelScope() as scope:
            async with SlurmSession(
                "127.0.0.1", **options_with(session_kwargs, slurm_setup=setup)
            ) as session:
                holder.update(session=session, scope=scope)
                opened.set()
                await anyio.sleep_forever()

    async def submit_one(i: int) -> None:
        try:
            await holder["session"].submit(add, (i, i), held)
        except SessionClosedError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(own_the_session)
        await opened.wait()
        with anyio.fail_after(45):
            async with anyio.create_task_group() as submits:
                # Two go to the two submit workers (each sleeping in sbatch), the third waits in the queue.
                for i in range(3):
                    submits.start_soon(submit_one, i)
                    await anyio.sleep(0.3)
                holder["scope"].cancel()
    assert len(outcomes) == 3
    assert all(isinstance(o, SessionClosedError) for o in outcomes), outcomes
    assert any("nothing was sent" in str(o) for o in outcomes)
    await anyio.sleep(SBATCH_DELAY)
    assert queued(slurm_cluster, name) == []


async def test_the_cancel_cap_holds_under_an_rpc_budget_and_names_what_it_left(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    name = f"capped-{new_token()}"
    held = JobSpec(job_name=name, options={"hold": True})
    # 20 tasks, 2 ids per scancel, one token every 5 s: about 45 s to cancel them all, capped at 3 s.
    options = options_with(session_kwargs, rpc_budget=RpcBudget(burst=2, rate=0.2), cancel_timeout=3)
    futures = []
    try:
        with pytest.raises(Boom):
            async with SlurmSession("127.0.0.1", **options) as session:
                futures = await session.map(add, range(20), range(20), spec=held)
                raised = anyio.current_time()
                raise Boom("the user's code failed")
        left_after = anyio.current_time() - raised
        # Two capped steps (submissions under way: none; cancelling) and the file removal, not 45 s.
        assert left_after < 20, left_after
        assert all(f.done() for f in futures)
        cancelled = [f for f in futures if isinstance(f.exception(), JobCancelled)]
        left = [f for f in futures if isinstance(f.exception(), SessionClosedError)]
        assert len(cancelled) + len(left) == 20
        assert left, "the budget cannot have let every scancel through within the cap"
        message = str(left[0].exception())
        assert "cancel_timeout=3" in message and f"scancel {left[0].job_id}" in message
        assert f"reattach({session.id!r})" in message
    finally:
        array = {f.job_id.split("_")[0] for f in futures}
        if array:
            login_shell(slurm_cluster, f"scancel {' '.join(array)}")


async def test_a_map_whose_second_array_is_refused_cancels_the_first(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], wrapper_dir: Path
) -> None:
    state = wrapper_dir / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    refuse_all_but_one = (
        f'mkdir "{state}/first" 2>/dev/null || '
        "{ echo 'sbatch: error: Batch job submission failed: refused by the site' >&2; exit 1; }"
    )
    setup = sbatch_wrapper(wrapper_dir, refuse_all_but_one)
    name = f"halfmap-{new_token()}"
    held = JobSpec(job_name=name, options={"hold": True})
    async with SlurmSession("127.0.0.1", **options_with(session_kwargs, slurm_setup=setup)) as session:
        session._submitter._max_array_size = 2  # four calls: two arrays, in one submit command
        with pytest.raises(SubmissionError, match="refused by the site") as caught:
            await session.map(add, range(4), range(4), spec=held)
        assert "The 2 call(s) of this map that sbatch had accepted were cancelled" in str(caught.value)
        assert queued(slurm_cluster, name) == []
        assert session._poller.live() == []


async def test_progress_without_rich_fails_in_map_and_the_session_goes_on(
    session_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        # What an environment without rich gives: the import fails.
        monkeypatch.setitem(sys.modules, "rich", None)
        monkeypatch.setitem(sys.modules, "rich.progress", None)
        with pytest.raises(ImportError, match=r"pip install 'slurmbatch\[rich\]'"):
            await session.map(add, [1], [2], progress=True)
        assert session._submitter.sbatch_calls == 0  # refused before anything was submitted
        assert await (await session.submit(add, (1, 2))) == 3
