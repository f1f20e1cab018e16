"""Choosing the transport of a session: asyncssh's own connections, or the user's OpenSSH master.

``transport="asyncssh"`` always opens connections of its own (`SSHPool`); ``"openssh"`` always runs
over an existing ControlMaster (`OpenSSHTransport`), found through the ssh config's ``ControlPath`` or
given as ``control_path``; ``"auto"`` (the default) takes the master when the ssh config names a
``ControlPath`` for the host and a master answers on it, else asyncssh.
"""

from __future__ import annotations

import logging
from typing import Literal

from slurmbatch._errors import ConnectError

from ._protocol import Transport
from .openssh import OpenSSHTransport, find_control_path
from .pool import SSHPool
from .settings import ConnectSettings

logger = logging.getLogger("slurmbatch")

__all__ = ["TRANSPORTS", "TransportName", "checked_transport", "open_transport"]

TransportName = Literal["auto", "asyncssh", "openssh"]
TRANSPORTS: tuple[TransportName, ...] = ("auto", "asyncssh", "openssh")


def checked_transport(transport: object, control_path: object) -> TransportName:
    """``transport`` if it names one, else a `ValueError` saying which exist."""
    if transport not in TRANSPORTS:
        raise ValueError(
            f"transport must be one of {', '.join(map(repr, TRANSPORTS))}, got {transport!r}: 'openssh' runs "
            "over your running OpenSSH ControlMaster, 'asyncssh' opens connections of its own, 'auto' "
            "picks the master when your ssh config has a live ControlPath for the host."
        )
    if control_path is not None and (not isinstance(control_path, str) or not control_path.strip()):
        raise ValueError(f"control_path must be the path of a ControlMaster socket, got {control_path!r}")
    if control_path is not None and transport == "asyncssh":
        raise ValueError("control_path is used by transport='openssh' (or 'auto'), not by 'asyncssh'")
    return transport


async def open_transport(
    settings: ConnectSettings,
    *,
    transport: TransportName,
    control_path: str | None,
    max_connections: int,
    max_channels: int,
    reconnect_deadline: float,
) -> Transport:
    """The transport ``transport`` names (see the module docstring), ready to use."""
    if transport != "asyncssh":
        path = control_path or await find_control_path(settings)
        if path is not None:
            master = OpenSSHTransport(
                settings, control_path=path, max_channels=max_channels, reconnect_deadline=reconnect_deadline
            )
            await master.check()
            logger.info("using the OpenSSH ControlMaster at %s for %s", path, settings.host)
            return master
        if transport == "openssh":
            configs = ", ".join(settings.ssh_config) or "no ssh config (ssh_config is empty)"
            raise ConnectError(
                f"transport='openssh' needs a running OpenSSH ControlMaster for {settings.host}, and none was "
                f"found: {configs} gives no ControlPath for it, or no master answers there. Run `ssh "
                f"{settings.host}` in a terminal with ControlMaster auto, ControlPath and ControlPersist in "
                "your ssh config, or pass control_path= the master's socket.",
                host=settings.host,
            )
    return SSHPool(
        settings,
        max_connections=max_connections,
        max_channels=max_channels,
        reconnect_deadline=reconnect_deadline,
    )
