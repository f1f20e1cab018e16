"""Randomised pauses between retries, so that many clients retrying at once spread out."""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["reconnect_delays", "refusal_pause"]


def reconnect_delays(first: float = 0.25, factor: float = 2.0, cap: float = 10.0) -> Iterator[float]:
    """Endless exponential backoff with jitter: each delay lies between half and all of the nominal one."""
    nominal = first
    while True:
        yield random.uniform(nominal / 2, nominal)
        nominal = min(cap, nominal * factor)


def refusal_pause(refusals: int) -> float:
    """How long to wait before retrying a channel the server refused ``refusals`` times in a row.

    Short at first, since sshd frees a session slot within milliseconds of a channel closing, and
    growing to at most half a second.
    """
    nominal = min(0.5, 0.01 * 2 ** min(refusals, 6))
    return random.uniform(nominal / 2, nominal)
