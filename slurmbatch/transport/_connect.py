"""Opening one SSH connection, and saying in plain words why one could not be opened.

Everything here runs on the asyncio side of the bridge. The connection options (ssh config, keys, known
hosts, and those of any jump hosts) are loaded once per pool by `load_route` and reused for every
reconnect.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import asyncssh
import attrs

from slurmbatch._errors import ConnectError

from ._options import Target, load_options
from ._route import JumpFailed, ProxyCommandFailed, Route, RouteError, load_route, open_route
from .kbdint import Answerer, KbdintClient, KbdintFailed
from .settings import ConnectSettings

__all__ = [
    "Route",
    "Target",
    "connect",
    "explain",
    "is_throttling",
    "is_unreachable",
    "load_options",
    "load_route",
    "target_of",
]


def target_of(settings: ConnectSettings, route: Route | None) -> Target:
    """Where connections go, as the route resolved it (naming the jump hosts it passes)."""
    if route is None:
        return Target.of(settings, None)
    return attrs.evolve(Target.of(settings, route.options), via=route.via)


async def connect(
    settings: ConnectSettings, route: Route, answer: Answerer | None = None
) -> asyncssh.SSHClientConnection:
    """Open and authenticate one connection along ``route`` from `load_route`.

    With ``answer``, keyboard-interactive challenges of the login node go to it; a login that fails
    after the handler was asked raises `KbdintFailed` saying so (the handler's own error, if it raised).
    """
    if answer is None:
        return await open_route(settings, route)
    clients: list[KbdintClient] = []

    def new_client() -> KbdintClient:
        clients.append(KbdintClient(answer))
        return clients[-1]

    try:
        return await open_route(settings, route, new_client)
    except asyncssh.DisconnectError as error:
        # sshd asks again after a wrong code, and disconnects after MaxAuthTries ("Too many
        # authentication failures"); a connection lost mid-login is throttling, retried as usual.
        client = clients[-1] if clients else None
        if error.code == asyncssh.DISC_CONNECTION_LOST:
            raise
        if client is not None and client.failure is not None:
            raise client.failure from error
        if client is not None and client.challenges:
            raise KbdintFailed(
                f"the server refused the answers the kbdint handler gave to its {client.challenges} "
                "keyboard-interactive challenge(s) (a wrong or expired one-time code, or a code used "
                "once already where the site forbids reuse)"
            ) from error
        raise


def is_throttling(error: BaseException) -> bool:
    """Whether the server dropped us mid-handshake, as sshd does past MaxStartups: worth retrying."""
    if isinstance(error, JumpFailed):
        return error.forwarding_to is None and is_throttling(error.error)
    return isinstance(error, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError)) or (
        isinstance(error, asyncssh.DisconnectError) and error.code == asyncssh.DISC_CONNECTION_LOST
    )


def is_unreachable(error: BaseException) -> bool:
    """Whether the server could not be reached at all: worth retrying only if it was reachable before."""
    if isinstance(error, JumpFailed):
        if error.forwarding_to is None:
            return is_unreachable(error.error)
        # The jump host is up but cannot reach the next hop (down or restarting): like a refused connect.
        inner = error.error
        return isinstance(inner, asyncssh.ChannelOpenError) and inner.code == asyncssh.OPEN_CONNECT_FAILED
    if isinstance(error, ProxyCommandFailed):
        return True  # whatever it connects through may come back, as a login node does
    if isinstance(error, socket.gaierror):
        return False  # a name that does not resolve will not start resolving by waiting
    return isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionRefusedError)) or (
        type(error) is OSError and error.errno is not None
    )


def explain(settings: ConnectSettings, route: Route | None, error: BaseException) -> ConnectError:
    """A `ConnectError` naming the host, the port (and any jump host) and the cause of ``error``."""
    target = target_of(settings, route)
    if isinstance(error, JumpFailed):
        return ConnectError(_describe_jump(settings, target, error), host=settings.host, cause=error.error)
    if isinstance(error, ProxyCommandFailed):
        message = (
            f"cannot connect to {target.address}: the ProxyCommand {' '.join(error.command)!r} ended before "
            f"the SSH handshake finished ({error.error}). Run that command by hand to see why (is the jump "
            "host it names up, and does it allow forwarding?)."
        )
        return ConnectError(message, host=settings.host, cause=error.error)
    if isinstance(error, KbdintFailed):
        message = (
            f"cannot log in to {target.address}: {error}. Check the handler passed as kbdint= (for a TOTP "
            "secret: the secret itself, and that this machine's clock is right), or log in with `ssh "
            f"{settings.host}` in a terminal to see what the site asks."
        )
        return ConnectError(message, host=settings.host, cause=error.cause or error)
    if isinstance(error, RouteError):
        return ConnectError(f"cannot connect to {target.address}: {error}", host=settings.host, cause=error)
    options = route.options if route is not None else None
    return ConnectError(_describe(settings, options, target, error), host=settings.host, cause=error)


def _describe_jump(settings: ConnectSettings, target: Target, failure: JumpFailed) -> str:
    hop_options = failure.hop.options if failure.hop is not None else None
    hop = Target.of(failure.settings, hop_options)
    inner = failure.error
    if failure.forwarding_to is None:
        why = _describe(failure.settings, hop_options, hop, inner)
        return f"cannot reach {target.address}: the jump host failed: {why}"
    reason = inner.reason if isinstance(inner, asyncssh.ChannelOpenError) else str(inner)
    code = inner.code if isinstance(inner, asyncssh.ChannelOpenError) else None
    if code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
        return (
            f"cannot reach {target.address}: the jump host {hop.address} refused to forward the connection "
            f"to {failure.forwarding_to} ({reason or 'administratively prohibited'}). Its sshd does not allow "
            "TCP forwarding (AllowTcpForwarding no) or not to that address (PermitOpen); ask its "
            "administrators, or reach the login node another way."
        )
    if code == asyncssh.OPEN_CONNECT_FAILED:
        return (
            f"cannot reach {target.address}: the jump host {hop.address} could not connect to "
            f"{failure.forwarding_to} ({reason or 'connect failed'}). Check the HostName and Port given for "
            "it, as seen from the jump host, and that sshd runs there."
        )
    return (
        f"cannot reach {target.address}: the jump host {hop.address} did not forward the connection to "
        f"{failure.forwarding_to} ({reason})."
    )


def _describe(
    settings: ConnectSettings,
    options: asyncssh.SSHClientConnectionOptions | None,
    target: Target,
    error: BaseException,
) -> str:
    where = target.address
    configs = ", ".join(settings.ssh_config) or "no ssh config file (ssh_config is empty)"
    if isinstance(error, socket.gaierror):
        if target.host == settings.host:
            return (
                f"cannot connect to {settings.host!r}: it is not a host name DNS knows, and no `Host "
                f"{settings.host}` entry with a HostName was found in {configs}. Check the spelling, or add "
                "the alias to your ssh config."
            )
        return (
            f"cannot connect to {where}: the HostName {target.host!r} that {configs} gives for "
            f"{settings.host!r} does not resolve ({error.strerror or error})."
        )
    if isinstance(error, ConnectionRefusedError):
        return (
            f"cannot connect to {where}: the connection was refused, so nothing listens on port "
            f"{target.port}. Check the port, and that sshd is running on {target.host}."
        )
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return (
            f"cannot connect to {where}: no answer within {settings.connect_timeout:g} s. Check the host "
            "name and port, and any VPN or firewall in between; raise connect_timeout for slow links."
        )
    if isinstance(error, asyncssh.PermissionDenied):
        return (
            f"{where} refused to log in user {target.user!r} with {_keys_tried(settings, options)}. "
            f"Check the user name, and that the matching public key is in ~{target.user}/.ssh/authorized_keys "
            "on the server (ssh-copy-id does this)."
            + (
                " If the site also asks for a one-time code or a password (multi-factor login), pass "
                "kbdint=slurmbatch.terminal_prompt (or totp_answers(secret)), or log in with `ssh` in a "
                "terminal with a ControlMaster and use transport='openssh'."
                if settings.kbdint is None
                else ""
            )
        )
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return _describe_host_key(settings, options, target)
    if isinstance(error, asyncssh.KeyImportError) and "passphrase" in str(error).lower():
        return (
            f"cannot log in to {where}: the key file(s) {_key_files(settings, options)} are passphrase-"
            "protected and no passphrase was given. Pass passphrase=..., or add the key to ssh-agent "
            "(ssh-add) and leave key_files empty."
        )
    if isinstance(error, asyncssh.KeyEncryptionError):
        hint = (
            "Passphrase-protected OpenSSH keys need the bcrypt package: pip install bcrypt."
            if "bcrypt" in str(error)
            else "Check the passphrase."
        )
        return f"cannot log in to {where}: cannot decrypt {_key_files(settings, options)} ({error}). {hint}"
    if isinstance(error, asyncssh.KeyImportError):
        return (
            f"cannot log in to {where}: {_key_files(settings, options)} is not a private key that can be read "
            f"({error}). Pass key_file= the private key (e.g. ~/.ssh/id_ed25519), not the public .pub file "
            "or a certificate."
        )
    if isinstance(error, asyncssh.ConfigParseError):
        return f"cannot connect to {where}: cannot parse the ssh config ({configs}): {error}."
    if isinstance(error, OSError) and error.filename is not None:
        return _describe_local_file(settings, options, target, error)
    if is_throttling(error):
        return (
            f"{where} closed the connection during the SSH handshake ({error}). The server may be limiting "
            "new connections (sshd's MaxStartups) or be restarting; try again shortly."
        )
    if isinstance(error, OSError):
        return f"cannot connect to {where}: {error.strerror or error}."
    return f"cannot connect to {where}: {type(error).__name__}: {error}."


def _describe_host_key(
    settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None, target: Target
) -> str:
    known_hosts = _known_hosts_file(settings, options)
    entry = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    scan = f"ssh-keyscan -p {target.port} {target.host} >> {known_hosts}"
    if _lists_host(known_hosts, target):
        return (
            f"the host key of {target.address} does not match the one {known_hosts} lists for it: the "
            "server's key changed, or someone is intercepting the connection. If your administrators "
            f"confirm the change, remove the stale entry with `ssh-keygen -R '{entry}' -f {known_hosts}` "
            f"and add the new key with `{scan}`."
        )
    return (
        f"the host key of {target.address} is not in {known_hosts}, so the server cannot be verified. If "
        f"you trust it, add its key with `{scan}` (compare the fingerprint with one your administrators "
        "publish), or pass verify_host_key=False to skip the check (insecure)."
    )


def _describe_local_file(
    settings: ConnectSettings,
    options: asyncssh.SSHClientConnectionOptions | None,
    target: Target,
    error: OSError,
) -> str:
    """A local file named in the settings (key, certificate, known_hosts, ssh config) cannot be read."""
    path = str(error.filename)
    if isinstance(error, FileNotFoundError):
        problem = "does not exist"
    elif isinstance(error, IsADirectoryError):
        problem = "is a directory, not a file"
    elif isinstance(error, PermissionError):
        problem = "cannot be read by this process (permission denied)"
    else:
        problem = f"cannot be read ({error.strerror or error})"
    where = target.address
    if path == _known_hosts_file(settings, options):
        scan = f"ssh-keyscan -p {target.port} {target.host} >> {path}"
        return (
            f"cannot connect to {where}: the known_hosts file {path} {problem}, so the server's host key "
            f"cannot be verified. Pass known_hosts= a readable file that lists the host, or create it with "
            f"`{scan}` after checking the fingerprint with your administrators."
        )
    if path in settings.ssh_config:
        return (
            f"cannot connect to {where}: the ssh config file {path} {problem}. Pass ssh_config= readable "
            "files, or ssh_config=() to read none."
        )
    if path in settings.cert_files:
        return (
            f"cannot log in to {where}: the certificate file {path} {problem}. Pass cert_file= the "
            "certificate your site issued for the key (e.g. ~/.ssh/id_ed25519-cert.pub)."
        )
    fix = (
        f"make it readable by you (it should be owned by you, mode 600: chmod 600 {path})"
        if isinstance(error, PermissionError)
        else "check key_file= (the private key file, e.g. ~/.ssh/id_ed25519)"
    )
    return (
        f"cannot log in to {where}: the key file {path} {problem}. Fix: {fix}; or leave key_file out to "
        "use ssh-agent and the default keys in ~/.ssh."
    )


def _known_hosts_file(settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None) -> str:
    if settings.known_hosts is not None:
        return settings.known_hosts
    from_config = options.config.get("UserKnownHostsFile") if options is not None else None
    if isinstance(from_config, (list, tuple)) and from_config:
        return str(from_config[0])
    return str(Path("~/.ssh/known_hosts").expanduser())


def _lists_host(known_hosts: str, target: Target) -> bool:
    try:
        matches = asyncssh.read_known_hosts(known_hosts).match(target.host, target.host, target.port)
    except (OSError, ValueError):
        return False
    host_keys, ca_keys = matches[0], matches[1]
    return bool(host_keys or ca_keys)


def _key_files(settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None) -> str:
    if settings.key_files:
        return ", ".join(settings.key_files)
    from_config = options.config.get("IdentityFile") if options is not None else None
    if isinstance(from_config, (list, tuple)) and from_config:
        return ", ".join(str(path) for path in from_config)
    return "the default keys in ~/.ssh"


def _keys_tried(settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None) -> str:
    if settings.key_files:
        return f"key file(s) {', '.join(settings.key_files)}"
    keys = f"key file(s) {_key_files(settings, options)}"
    agent = " and the keys in ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else ""
    return keys + agent
