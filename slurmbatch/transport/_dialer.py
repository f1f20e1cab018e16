"""Opening SSH connections: paced, retried with backoff through an outage, explained when hopeless.

`Dialer` opens one connection at a time for `SSHPool`. Attempts are at least ``connect_interval``
seconds apart (sshd's MaxStartups drops handshakes that arrive in bursts). Failures that waiting can fix
(throttling, and an unreachable host once a connection has succeeded) are retried with jittered
exponential backoff until ``reconnect_deadline`` seconds into the outage; the rest raise `ConnectError`
at once, in plain words (see `_connect.explain`).
"""

from __future__ import annotations

import functools
import logging

import anyio
import asyncssh

from slurmbatch._errors import ConnectError, SlurmBatchError

from ._backoff import reconnect_delays
from ._bridge import AsyncioBridge
from ._connect import Route, connect, explain, is_throttling, is_unreachable, load_route, target_of
from .settings import ConnectSettings

logger = logging.getLogger("slurmbatch")

__all__ = ["Dialer"]


class Dialer:
    """Opens connections to one login node (see the module docstring).

    Attributes:
        target: Where connections go, as resolved from the ssh config once it has been read.
        opened: Connections opened so far.
    """

    def __init__(
        self,
        settings: ConnectSettings,
        bridge: AsyncioBridge,
        *,
        connect_interval: float,
        reconnect_deadline: float,
    ) -> None:
        self._settings = settings
        self._bridge = bridge
        self._connect_interval = connect_interval
        self._reconnect_deadline = reconnect_deadline
        self._route: Route | None = None
        self.target = target_of(settings, None)
        self._ever_connected = False
        self._outage_since: float | None = None
        self._last_attempt_at: float | None = None
        self.opened = 0
        kbdint = settings.kbdint
        self._answer = None if kbdint is None else functools.partial(bridge.call_back, kbdint)

    def outage_started(self) -> None:
        """A connection was lost: the reconnect deadline counts from now, unless an outage runs already."""
        if self._outage_since is None:
            self._outage_since = anyio.current_time()

    async def dial(self, open_now: int) -> asyncssh.SSHClientConnection:
        """Open one connection (``open_now`` are open already, for the log), retrying as described above."""
        delays = reconnect_delays()
        while True:
            await self._pace()
            try:
                if self._route is None:
                    self._route = await self._bridge.call(load_route, self._settings)
                    self.target = target_of(self._settings, self._route)
                ssh = await self._bridge.call(connect, self._settings, self._route, self._answer)
            except SlurmBatchError:
                raise
            except Exception as error:
                pause = self._pause_before_retry(error, next(delays))
                if pause is None:
                    raise self._give_up(error) from error
                logger.info(
                    "connecting to %s failed (%s); retrying in %.1f s", self._settings.host, error, pause
                )
                await anyio.sleep(pause)
            else:
                self.opened += 1
                logger.info(
                    "SSH connection %d to %s opened (%d open)", self.opened, self._settings.host, open_now + 1
                )
                self._ever_connected = True
                self._outage_since = None
                return ssh

    async def _pace(self) -> None:
        """Keep connection attempts at least ``connect_interval`` seconds apart."""
        if self._last_attempt_at is not None:
            await anyio.sleep(max(0.0, self._last_attempt_at + self._connect_interval - anyio.current_time()))
        self._last_attempt_at = anyio.current_time()

    def _pause_before_retry(self, error: Exception, delay: float) -> float | None:
        """Seconds to wait before trying again, or None if waiting cannot help or the deadline passed."""
        if not (is_throttling(error) or (self._ever_connected and is_unreachable(error))):
            return None
        now = anyio.current_time()
        if self._outage_since is None:
            self._outage_since = now
        remaining = self._outage_since + self._reconnect_deadline - now
        return min(delay, remaining) if remaining > 0 else None

    def _give_up(self, error: Exception) -> ConnectError:
        explained = explain(self._settings, self._route, error)
        if self._outage_since is None:
            return explained
        waited = anyio.current_time() - self._outage_since
        self._outage_since = None  # the next request gets a fresh reconnect_deadline
        return ConnectError(
            f"{explained} Gave up after retrying for {waited:.1f} s (reconnect_deadline={self._reconnect_deadline:g}).",
            host=explained.host,
            cause=error,
        )
