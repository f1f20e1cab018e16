"""The way to the login node: directly, through a ``ProxyCommand``, or through ``ProxyJump`` hosts.

OpenSSH reads the ssh config again for every jump host (``ssh -W`` to the next hop), so a hop may be a
``Host`` alias of the same files, ``user@host:port``, or a chain ``a,b`` (``b`` reached through ``a``).
The first hop's own ``ProxyJump`` is followed too, as OpenSSH does; later hops are always reached through
the hop before them. asyncssh would open the jump hosts itself, but only with the config files given to
that very call, and the pool loads the config once: so the hops are resolved here, once per pool, and each
connection opens its own jump connections (one login per sshd per connection, as OpenSSH makes).

Everything here runs on the asyncio side of the bridge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import asyncssh
import attrs

from ._options import Target, load_options
from ._proxy_jump import JumpHop, ProxyJumpError, parse_proxy_jump
from .settings import ConnectSettings

__all__ = ["Hop", "JumpFailed", "ProxyCommandFailed", "Route", "RouteError", "load_route", "open_route"]

# OpenSSH has no limit, and loops forever on a config whose jump hosts name each other.
MAX_JUMPS = 8


class RouteError(Exception):
    """The ssh config describes a way to the login node that cannot be followed (message in plain words)."""


@attrs.frozen
class Hop:
    """One jump host: how it was written in ``ProxyJump``, and the settings and options it connects with."""

    written: JumpHop
    settings: ConnectSettings
    options: asyncssh.SSHClientConnectionOptions


class JumpFailed(Exception):
    """A jump host could not be reached or logged in to, or it refused to forward to the next hop.

    ``hop`` is the jump host that failed (``None`` while its options were still being loaded, then
    ``settings`` names it); ``forwarding_to`` is ``host:port`` of the next hop when the jump host itself
    was fine but would not (or could not) open the forwarded connection.
    """

    def __init__(
        self,
        settings: ConnectSettings,
        hop: Hop | None,
        error: BaseException,
        *,
        forwarding_to: str | None = None,
    ) -> None:
        super().__init__(f"jump host {settings.host}: {error}")
        self.settings = settings
        self.hop = hop
        self.error = error
        self.forwarding_to = forwarding_to


class ProxyCommandFailed(Exception):
    """The ``ProxyCommand`` ended (or never spoke SSH) before the handshake was done."""

    def __init__(self, command: Sequence[str], error: BaseException) -> None:
        super().__init__(f"ProxyCommand {' '.join(command)!r} ended: {error}")
        self.command = tuple(command)
        self.error = error


@attrs.frozen
class Route:
    """The login node's connection options and the jump hosts in front of it, first hop first."""

    options: asyncssh.SSHClientConnectionOptions
    jumps: tuple[Hop, ...] = ()

    @property
    def via(self) -> str:
        """``"via jump host a, then b"`` for messages; empty for a direct connection."""
        if self.jumps:
            return "via jump host " + ", then ".join(f"{hop.written}" for hop in self.jumps)
        if self.options.proxy_command:
            return f"via ProxyCommand {' '.join(self.options.proxy_command)!r}"
        return ""


async def load_route(settings: ConnectSettings) -> Route:
    """Load the login node's options, and those of every jump host its ``ProxyJump`` names."""
    options = await load_options(settings)
    tunnel = options.tunnel
    if not isinstance(tunnel, str):
        return Route(options)
    return Route(options, await _load_jumps(settings, tunnel, depth=0))


async def _load_jumps(settings: ConnectSettings, proxy_jump: str, *, depth: int) -> tuple[Hop, ...]:
    try:
        written = parse_proxy_jump(proxy_jump)
    except ProxyJumpError as error:
        raise RouteError(f"{error} (in {', '.join(settings.ssh_config) or 'the ssh config'})") from error
    hops: list[Hop] = []
    for index, jump in enumerate(written):
        hop = await _load_hop(settings, jump)
        own = hop.options.tunnel
        if index == 0 and isinstance(own, str):
            if depth + len(written) >= MAX_JUMPS:
                raise RouteError(
                    f"the ProxyJump entries of {', '.join(settings.ssh_config)} lead through more than "
                    f"{MAX_JUMPS} jump hosts (do two Host entries name each other as ProxyJump?)."
                )
            hops.extend(await _load_jumps(settings, own, depth=depth + 1))
        hops.append(hop)
    return tuple(hops)


async def _load_hop(settings: ConnectSettings, jump: JumpHop) -> Hop:
    """Options for one jump host, from the same ssh config files as the login node.

    The key files and known_hosts given for the login node serve the jump host too, unless the ssh
    config names its own (``IdentityFile``, ``UserKnownHostsFile``): a site's jump host usually takes the
    same key, and a config that says otherwise knows better.
    """
    own = attrs.evolve(
        settings,
        host=jump.host,
        port=jump.port,
        user=jump.user,
        key_files=(),
        cert_files=(),
        known_hosts=None,
    )
    try:
        options = await load_options(own)
        wanted = own
        if settings.key_files and not options.config.get("IdentityFile"):
            wanted = attrs.evolve(wanted, key_files=settings.key_files, cert_files=settings.cert_files)
        if settings.known_hosts is not None and not options.config.get("UserKnownHostsFile"):
            wanted = attrs.evolve(wanted, known_hosts=settings.known_hosts)
        if wanted != own:
            options = await load_options(wanted)
    except Exception as error:
        raise JumpFailed(own, None, error) from error
    return Hop(jump, wanted, options)


async def open_route(
    settings: ConnectSettings,
    route: Route,
    client_factory: Callable[[], asyncssh.SSHClient] | None = None,
) -> asyncssh.SSHClientConnection:
    """Open the jump connections of ``route`` in order, then the login node's connection through them.

    ``client_factory`` (keyboard-interactive answers) serves the login node only: jump hosts log in
    with keys. Closing the returned connection closes its jump connections too.
    """
    tunnel: asyncssh.SSHClientConnection | None = None
    try:
        for index, hop in enumerate(route.jumps):
            try:
                opened = await _connect_one(hop.settings.host, hop.options, tunnel)
            except asyncssh.ChannelOpenError as error:
                if index == 0:
                    raise JumpFailed(hop.settings, hop, error) from error
                previous = route.jumps[index - 1]
                where = _host_port(Target.of(hop.settings, hop.options))
                raise JumpFailed(previous.settings, previous, error, forwarding_to=where) from error
            except Exception as error:
                raise JumpFailed(hop.settings, hop, error) from error
            opened.set_tunnel(tunnel)
            tunnel = opened
        try:
            connection = await _connect_one(settings.host, route.options, tunnel, client_factory)
        except asyncssh.ChannelOpenError as error:
            last = route.jumps[-1]
            where = _host_port(Target.of(settings, route.options))
            raise JumpFailed(last.settings, last, error, forwarding_to=where) from error
        except (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError) as error:
            if tunnel is None and route.options.proxy_command:
                raise ProxyCommandFailed(route.options.proxy_command, error) from error
            raise
    except BaseException:
        if tunnel is not None:
            tunnel.abort()
            with contextlib.suppress(Exception):
                await tunnel.wait_closed()
        raise
    connection.set_tunnel(tunnel)
    return connection


async def _connect_one(
    host: str,
    options: asyncssh.SSHClientConnectionOptions,
    tunnel: asyncssh.SSHClientConnection | None,
    client_factory: Callable[[], asyncssh.SSHClient] | None = None,
) -> asyncssh.SSHClientConnection:
    # config=None: the options already hold the parsed ssh config; don't read the files again. tunnel is
    # always given: a ProxyJump of the options was resolved by load_route into the hops before this one,
    # and asyncssh must not open it again (without the config files it would not know the aliases).
    if client_factory is None:
        return await asyncssh.connect(host, options=options, config=None, tunnel=tunnel)
    connection, _ = await asyncssh.create_connection(
        client_factory, host, options=options, config=None, tunnel=tunnel
    )
    return connection


def _host_port(target: Target) -> str:
    return f"{target.host}:{target.port}"
