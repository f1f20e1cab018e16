"""The connection options of one host, as the ssh config and the settings give them.

`load_options` reads the ssh config, key files and known_hosts once per pool (and per jump host); the
result is reused for every reconnect. `Target` is where the options lead, for messages.
"""

from __future__ import annotations

from typing import cast

import asyncssh
import attrs

from .settings import ConnectSettings

__all__ = ["Target", "load_options"]


@attrs.frozen
class Target:
    """Where connections go once the ssh config is applied: for messages."""

    alias: str
    host: str
    port: int
    user: str
    #: How the connection gets there when not directly, e.g. ``"via jump host bastion"``.
    via: str = ""

    @property
    def address(self) -> str:
        """``host:port``, naming the alias too when the ssh config translated it."""
        where = f"{self.host}:{self.port}"
        if self.alias != self.host:
            where = f"{where} (ssh config alias {self.alias!r})"
        return f"{where} {self.via}" if self.via else where

    @classmethod
    def of(cls, settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None) -> Target:
        """The target as the options resolved it, or as given when the options could not be loaded."""
        if options is None:
            return cls(settings.host, settings.host, settings.port or 22, settings.user or _local_user())
        return cls(settings.host, str(options.host), int(options.port), str(options.username))


async def load_options(settings: ConnectSettings) -> asyncssh.SSHClientConnectionOptions:
    """Read the ssh config, key files and known_hosts named by ``settings`` (file I/O off the loop)."""
    optional: dict[str, object] = {}
    if settings.port is not None:
        optional["port"] = settings.port
    if settings.user is not None:
        optional["username"] = settings.user
    if settings.key_files:
        optional["client_keys"] = list(settings.key_files)
    if settings.cert_files:
        optional["client_certs"] = list(settings.cert_files)
    if not settings.verify_host_key:
        optional["known_hosts"] = None
    elif settings.known_hosts is not None:
        optional["known_hosts"] = settings.known_hosts
    options = await asyncssh.SSHClientConnectionOptions.construct(
        host=settings.host,
        config=list(settings.ssh_config) if settings.ssh_config else None,
        passphrase=settings.passphrase,
        connect_timeout=settings.connect_timeout,
        keepalive_interval=settings.keepalive_interval,
        **optional,
    )
    return cast(asyncssh.SSHClientConnectionOptions, options)


def _local_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "the local user"
