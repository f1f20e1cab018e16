"""A client-side budget of the RPCs a session sends to slurmctld, shared by sbatch, squeue/sacct and scancel.

Slurm's own rate limiter (`SlurmctldParameters=rl_enable`) is a token bucket per user: by default 30
tokens, refilled at 2 per second, one token per RPC. A session that stays inside the same bucket on the
client side is never throttled (nor logged) by slurmctld, and leaves the rest of the user's budget to the
user's other tools.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio
import attrs

__all__ = ["RpcBudget", "TokenBucket"]


def _check_burst(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RpcBudget.burst must be a whole number of RPCs >= 1, not {value!r}")


def _check_rate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"RpcBudget.rate must be a positive number of RPCs per second, not {value!r}")


@attrs.frozen
class RpcBudget:
    """At most `burst` scheduler RPCs at once, and `rate` per second on average.

    Pass one as `SlurmSession(..., rpc_budget=RpcBudget())` to stay inside Slurm's default rate limiter.
    Each `sbatch` counts one RPC (a job array is one), each status query one (`squeue`, and `sacct`
    when asked), each cancelled job id one. Submissions wait for their tokens; the status loop postpones
    its query instead, so results keep arriving.

    Attributes:
        burst: Tokens in a full bucket: RPCs that may go at once after a quiet spell.
        rate: Tokens added per second.
    """

    burst: int = attrs.field(default=30, validator=_check_burst)
    rate: float = attrs.field(default=2.0, validator=_check_rate)


class TokenBucket:
    """The running state of an [`RpcBudget`][slurmbatch.RpcBudget] in one session.

    Reservations may drive the balance below zero: the caller then waits until the bucket has refilled
    what it took, and later callers queue behind it. Over any span of `t` seconds, at most
    `burst + rate * t` RPCs go out.
    """

    def __init__(self, budget: RpcBudget, clock: Callable[[], float] = anyio.current_time) -> None:
        self.burst = budget.burst
        self.rate = float(budget.rate)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()
        #: RPCs let through so far.
        self.spent = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _check(self, count: int) -> None:
        if not 1 <= count <= self.burst:
            raise ValueError(f"a reservation takes 1 to {self.burst} tokens (the burst), not {count}")

    def delay(self, count: int) -> float:
        """Seconds until `count` tokens are in the bucket; takes none."""
        self._check(count)
        self._refill()
        return max(0.0, (count - self._tokens) / self.rate)

    def reserve(self, count: int) -> float:
        """Take `count` tokens now; return the seconds to wait before their RPCs may go."""
        self._check(count)
        self._refill()
        self._tokens -= count
        self.spent += count
        return max(0.0, -self._tokens / self.rate)

    def try_take(self, count: int) -> float:
        """Take `count` tokens if they are there (return 0.0); else take none and return the wait."""
        wait = self.delay(count)
        if wait == 0.0:
            self.reserve(count)
        return wait

    async def acquire(self, count: int) -> None:
        """Wait until `count` RPCs may go."""
        wait = self.reserve(count)
        if wait > 0:
            await anyio.sleep(wait)
