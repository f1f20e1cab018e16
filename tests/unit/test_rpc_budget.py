"""The token bucket behind RpcBudget: pure arithmetic on an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurmbatch import RpcBudget
from slurmbatch.rpc_budget import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RpcBudget(burst=30, rate=2.0), clock)
    assert bucket.reserve(30) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.5)
    assert bucket.reserve(4) == pytest.approx(2.5)  # queued behind the first reservation
    clock.now += 2.5
    assert bucket.delay(1) == pytest.approx(0.5)
    assert bucket.spent == 35


def test_try_take_takes_nothing_when_short() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RpcBudget(burst=2, rate=1.0), clock)
    assert bucket.try_take(2) == 0.0
    assert bucket.try_take(1) == pytest.approx(1.0)
    assert bucket.spent == 2
    clock.now += 1.0
    assert bucket.try_take(1) == 0.0
    assert bucket.spent == 3


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RpcBudget(burst=5, rate=10.0), clock)
    clock.now += 3600
    assert bucket.reserve(5) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.1)


@given(
    burst=st.integers(1, 50),
    rate=st.floats(0.1, 100.0),
    steps=st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 50)), max_size=40),
)
def test_no_span_sees_more_than_burst_plus_rate_times_its_length(
    burst: int, rate: float, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(RpcBudget(burst=burst, rate=rate), clock)
    sent: list[tuple[float, int]] = []  # (when the RPCs may go, how many)
    for pause, count in steps:
        clock.now += pause
        count = min(count, burst)
        sent.append((clock.now + bucket.reserve(count), count))
    for i, (start, _) in enumerate(sent):
        for end, _ in sent[i:]:
            inside = sum(n for when, n in sent if start <= when <= end)
            assert inside <= burst + rate * (end - start) + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"burst": 0}, "burst"), ({"burst": 2.5}, "burst"), ({"rate": 0}, "rate"), ({"rate": "fast"}, "rate")],
)
def test_a_budget_that_cannot_work_is_refused_by_name(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"RpcBudget.{named}"):
        RpcBudget(**kwargs)  # type: ignore[arg-type]


def test_a_reservation_larger_than_the_burst_is_a_caller_error() -> None:
    bucket = TokenBucket(RpcBudget(burst=3), FakeClock())
    with pytest.raises(ValueError, match="1 to 3"):
        bucket.reserve(4)
