"""Reading an OpenSSH ``ProxyJump`` value: the jump hosts a connection goes through. Pure: no I/O here.

OpenSSH accepts a comma-separated list of hops, each ``[user@]host[:port]`` or
``ssh://[user@]host[:port]``, tried in order (the first is reached directly, each next one through the one
before), or ``none`` for no jump at all. ``host`` may be a ``Host`` alias of the same ssh config, and an
IPv6 address is written in brackets when a port follows (``[::1]:2222``).
"""

from __future__ import annotations

import attrs

__all__ = ["JumpHop", "ProxyJumpError", "parse_proxy_jump"]


class ProxyJumpError(ValueError):
    """A ``ProxyJump`` value that OpenSSH would not accept either; the message says which part is wrong."""


@attrs.frozen
class JumpHop:
    """One jump host as written in ``ProxyJump``: a host name or alias, and the user and port if given."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"


def parse_proxy_jump(value: str) -> tuple[JumpHop, ...]:
    """The hops of a ``ProxyJump`` value, first hop first; ``()`` for ``none`` or an empty value.

    Raises `ProxyJumpError` naming the offending hop when one is empty or has a port that is not a
    number from 1 to 65535.
    """
    text = value.strip()
    if not text or text.lower() == "none":
        return ()
    return tuple(_parse_hop(hop.strip(), value) for hop in text.split(","))


def _parse_hop(hop: str, value: str) -> JumpHop:
    if hop.lower().startswith("ssh://"):
        hop = hop[len("ssh://") :].rstrip("/")
    if not hop:
        raise ProxyJumpError(f"ProxyJump {value!r} has an empty hop; separate jump hosts by single commas.")
    user: str | None = None
    if "@" in hop:
        user, hop = hop.rsplit("@", 1)
        if not user:
            raise ProxyJumpError(f"ProxyJump {value!r}: the user before '@{hop}' is empty.")
    host, port_text = _split_port(hop)
    if not host or any(char.isspace() for char in host):
        raise ProxyJumpError(f"ProxyJump {value!r}: {hop!r} does not name a host.")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ProxyJumpError(
                f"ProxyJump {value!r}: the port {port_text!r} of {host!r} is not a number from 1 to 65535."
            )
        port = int(port_text)
    return JumpHop(host=host, user=user, port=port)


def _split_port(hop: str) -> tuple[str, str | None]:
    """``host[:port]`` or ``[v6address][:port]``; a bare IPv6 address (several colons) has no port."""
    if hop.startswith("["):
        address, bracket, rest = hop[1:].partition("]")
        if not bracket:
            return hop, None
        return address, (rest[1:] if rest.startswith(":") else rest or None)
    if hop.count(":") == 1:
        host, port = hop.split(":")
        return host, port
    return hop, None
