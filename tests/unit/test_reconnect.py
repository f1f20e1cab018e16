"""Telling a dropped connection worth retrying from a failure, and timing an outage."""

from __future__ import annotations

import sys

import anyio
import pytest

from slurmbatch import ConnectError, ConnectionLost
from slurmbatch._reconnect import Outage, retry_lost, sole_error

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


def test_sole_error_unwraps_groups_of_one_member_only() -> None:
    lost = ConnectionLost("dropped")
    assert sole_error(ExceptionGroup("outer", [ExceptionGroup("inner", [lost])])) is lost
    two = ExceptionGroup("two", [lost, ValueError("other")])
    assert sole_error(two) is two
    assert sole_error(lost) is lost


async def test_retry_lost_repeats_only_dropped_operations_and_gives_up_at_the_deadline() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionLost("dropped", host="login")
        return "done"

    assert await retry_lost(flaky, deadline=10, what="reading") == "done"
    assert calls == 3

    async def always_lost() -> None:
        raise ConnectionLost("dropped", host="login")

    with anyio.fail_after(10), pytest.raises(ConnectError, match=r"reading failed.*reconnect_deadline=0.3"):
        await retry_lost(always_lost, deadline=0.3, what="reading")

    async def refused() -> None:
        raise ConnectError("wrong key", host="login")

    with pytest.raises(ConnectError, match="wrong key"):  # not a drop: no retry
        await retry_lost(refused, deadline=10, what="reading")


async def test_an_outage_that_ends_starts_the_clock_again() -> None:
    outage = Outage(5)
    assert 0 < outage.lost(ConnectionLost("x"), "w") <= 2
    assert outage.since is not None and outage.losses == 1
    outage.over()
    assert outage.since is None and outage.losses == 0
