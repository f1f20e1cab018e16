"""The session's status loop, kept running: a dropped connection resumes it, other errors fail its jobs.

The user's code runs inside the session's task group, so an error of the loop must reach the futures,
never cancel the user's block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from ._errors import ConnectError, ConnectionLost
from ._poller import Poller
from ._reconnect import Outage, sole_error

__all__ = ["follow_jobs"]

logger = logging.getLogger("slurmbatch")


async def follow_jobs(
    poller: Poller,
    *,
    reconnect_deadline: float,
    give_up: Callable[[ConnectError], None],
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``poller`` until cancelled. An outage past ``reconnect_deadline`` calls ``give_up`` (the
    jobs' outcome is unknown, not failed); any other error of the loop fails the jobs it watched."""
    started = False
    outage = Outage(reconnect_deadline)
    while True:
        try:
            if started:
                await poller.run()
            else:
                started = True
                await poller.run(task_status=task_status)
        except Exception as raised:
            # The loop runs a task group: its error arrives wrapped in an exception group.
            exc = sole_error(raised)
            if isinstance(exc, ConnectionLost):
                # Go on where it stopped, on a new connection; a scheduler query covers the gap.
                if outage.since is not None and poller.last_success > outage.since:
                    outage.over()
                try:
                    pause = outage.lost(exc, "following the jobs")
                except ConnectError as past_deadline:
                    give_up(past_deadline)
                    outage.over()
                    continue
                poller.request_status()
                await anyio.sleep(pause)
                continue
            if isinstance(exc, ConnectError):  # the pool gave up opening a connection: the same outage
                give_up(exc)
                outage.over()
                await anyio.sleep(1.0)
                continue
            logger.error(
                "the status loop failed (%s); failing the %d job(s) it watched", exc, len(poller.live())
            )
            poller.fail_all(exc)
            await anyio.sleep(1.0)
