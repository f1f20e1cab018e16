"""Futures as arguments: jobs that take other jobs' values, on the real local cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch import DependencyFailed, JobState, PayloadError, SlurmSession

pytestmark = [pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEN_MB = 10 * 2**20


def make_block(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def checksum(block: bytes) -> tuple[int, int]:
    return len(block), sum(block[::4096])


def increment(x: int) -> int:
    return x + 1


def total(values: list[int], *, extra: dict[str, Any]) -> int:
    return sum(values) + sum(extra["more"])


def fail_with(message: str) -> int:
    raise ValueError(message)


def slow_increment(x: int) -> int:
    import time

    time.sleep(2)
    return x + 1


def read_bytes(session: SlurmSession) -> int:
    return session._pool.transfers.bytes_read


@pytest.mark.anyio
async def test_a_large_value_goes_job_to_job_without_the_client(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        block = await session.submit(make_block, (TEN_MB,))
        before = read_bytes(session)
        summary = await session.submit(checksum, (block,))
        expected = checksum(make_block(TEN_MB))
        assert tuple(await summary) == expected
        # The dependant waited on the cluster (afterok), and read the value there.
        assert block.done() and block.state is JobState.COMPLETED
        read = read_bytes(session) - before
        assert read < 64 * 1024, f"the client read {read} bytes while the value was passed on"
        # Still readable on the client when asked for.
        assert len(await block) == TEN_MB
        assert read_bytes(session) - before >= TEN_MB


@pytest.mark.anyio
async def test_a_chain_of_five(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(increment, (0,))
        chain = [future]
        for _ in range(4):
            future = await session.submit(increment, (future,))
            chain.append(future)
        # All five were submitted at once, before the first finished.
        assert len({f.job_id for f in chain}) == 5
        assert await chain[-1] == 5
        assert [await f for f in chain] == [1, 2, 3, 4, 5]


@pytest.mark.anyio
async def test_fan_in_of_futures_in_a_list_and_a_dict(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        parts = await session.map(increment, range(4))
        done_already = await session.submit(increment, (100,))
        assert await done_already == 101  # a finished future works too
        result = await session.submit(
            total, (parts[:3],), kwargs={"extra": {"more": (parts[3], done_already)}}
        )
        assert await result == (1 + 2 + 3) + 4 + 101


@pytest.mark.anyio
async def test_map_over_the_futures_of_a_map(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        first = await session.map(increment, range(6))
        second = await session.map(increment, first)
        # Task i of the second array waits for task i of the first: one array job, aftercorr.
        assert len({f.job_id.split("_")[0] for f in second}) == 1
        assert [await f for f in second] == [i + 2 for i in range(6)]


@pytest.mark.anyio
async def test_an_upstream_failure_fails_its_dependants(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        bad = await session.submit(fail_with, ("no luck",))
        child = await session.submit(increment, (bad,))
        grandchild = await session.submit(increment, (child,))
        for dependant in (child, grandchild):
            with pytest.raises(DependencyFailed) as raised:
                await dependant
            assert raised.value.upstream_job_id == bad.job_id
            assert isinstance(raised.value.upstream_error, ValueError)
            assert "no luck" in str(raised.value)
            assert dependant.state is JobState.CANCELLED
        assert session._deps.cancelled_dependants == 2
        # A future that already failed is refused at once, nothing submitted.
        with pytest.raises(DependencyFailed, match=bad.job_id):
            await session.submit(increment, (bad,))


@pytest.mark.anyio
async def test_futures_that_cannot_be_arguments_are_refused(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        released = await session.submit(increment, (1,))
        await released
        session.release([released])
        with pytest.raises(PayloadError, match="released"):
            await session.submit(increment, (released,))
        async with SlurmSession("127.0.0.1", **session_kwargs) as other:
            foreign = await other.submit(increment, (1,))
            with pytest.raises(PayloadError, match="another session"):
                await session.submit(increment, (foreign,))


@pytest.mark.anyio
async def test_a_detached_chain_is_collected_once_by_a_later_session(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    from .conftest import session_options

    options = session_options(slurm_cluster, journal=tmp_path / "journal.sqlite3")
    async with SlurmSession("127.0.0.1", **options) as first:
        head = await first.submit(increment, (1,))
        middle = await first.submit(slow_increment, (head,))
        tail = await first.submit(increment, (middle,))
        await head  # finished before the session ends: its files stay for the detached dependants
        detached = first.detach()
    assert sorted(detached) == sorted([middle.job_id, tail.job_id])
    async with SlurmSession("127.0.0.1", **options) as second:
        again = await second.reattach(first.id)
        # Neither lost nor doubled: the two detached jobs, each once, with the values of the chain.
        assert sorted(f.job_id for f in again) == sorted(detached)
        values = {f.job_id: await f for f in again}
        assert values == {middle.job_id: 3, tail.job_id: 4}
        assert await second.reattach(first.id) == []


def test_executor_futures_as_arguments(slurm_cluster: Any) -> None:
    from slurmbatch import SlurmExecutor

    from .conftest import session_options

    with SlurmExecutor("127.0.0.1", **session_options(slurm_cluster)) as executor:
        first = executor.submit(increment, 1)
        second = executor.submit(increment, first)
        both = executor.submit(total, [first, second], extra={"more": [second]})
        assert both.result(timeout=120) == 2 + 3 + 3
        assert first.result() == 2
