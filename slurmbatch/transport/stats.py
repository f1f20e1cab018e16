"""Counters describing how an `SSHPool` has used the server."""

from __future__ import annotations

import attrs

__all__ = ["PoolStats"]


@attrs.frozen(kw_only=True)
class PoolStats:
    """A snapshot of an `SSHPool`'s counters since it was created.

    Attributes:
        connections_opened: Connections opened and authenticated.
        connections_lost: Connections found dead (dropped by the server or the network) and replaced.
        channel_refusals_retried: Channel opens the server refused (its MaxSessions limit) and that were
            retried after a pause.
        channels_in_use_peak: The most channels in use at once, over all connections.
        connections_open: Connections open now.
        channels_in_use: Channels in use now.
    """

    connections_opened: int = 0
    connections_lost: int = 0
    channel_refusals_retried: int = 0
    channels_in_use_peak: int = 0
    connections_open: int = 0
    channels_in_use: int = 0
