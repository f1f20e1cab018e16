"""Opening one SSH connection, and saying in plain words why one could not be opened.

Everything here runs on the asyncio side of the bridge. The connection options (ssh config, keys, known
hosts) are loaded once per pool by `load_options` and reused for every reconnect.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import cast

import asyncssh
import attrs

from slurmbatch._errors import ConnectError

from .settings import ConnectSettings

__all__ = ["Target", "connect", "explain", "is_throttling", "is_unreachable", "load_options"]


@attrs.frozen
class Target:
    """Where connections go once the ssh config is applied: for messages."""

    alias: str
    host: str
    port: int
    user: str

    @property
    def address(self) -> str:
        """``host:port``, naming the alias too when the ssh config translated it."""
        where = f"{self.host}:{self.port}"
        return where if self.alias == self.host else f"{where} (ssh config alias {self.alias!r})"

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


async def connect(
    settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions
) -> asyncssh.SSHClientConnection:
    """Open and authenticate one connection with ``options`` from `load_options`."""
    # config=None: the options already hold the parsed ssh config; don't read the files again.
    return await asyncssh.connect(settings.host, options=options, config=None)


def is_throttling(error: BaseException) -> bool:
    """Whether the server dropped us mid-handshake, as sshd does past MaxStartups: worth retrying."""
    return isinstance(error, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError)) or (
        isinstance(error, asyncssh.DisconnectError) and error.code == asyncssh.DISC_CONNECTION_LOST
    )


def is_unreachable(error: BaseException) -> bool:
    """Whether the server could not be reached at all: worth retrying only if it was reachable before."""
    if isinstance(error, socket.gaierror):
        return False  # a name that does not resolve will not start resolving by waiting
    return isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionRefusedError)) or (
        type(error) is OSError and error.errno is not None
    )


def explain(
    settings: ConnectSettings, options: asyncssh.SSHClientConnectionOptions | None, error: BaseException
) -> ConnectError:
    """A `ConnectError` naming the host, the port and the cause of ``error`` in plain words."""
    target = Target.of(settings, options)
    return ConnectError(_describe(settings, options, target, error), host=settings.host, cause=error)


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


def _local_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "the local user"
