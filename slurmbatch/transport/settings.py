"""How to reach the login node: host, identity, host-key policy and timeouts.

`ConnectSettings` is a frozen value. The pool hands it to asyncssh on every (re)connect, so one settings
object describes every connection of a session. OpenSSH client configuration files are honoured: a
``host`` may be a ``Host`` alias whose ``HostName``, ``Port``, ``User``, ``IdentityFile``, ``ProxyJump`` and
``ProxyCommand`` come from the files in ``ssh_config``. Values given here win over the files.

``ProxyJump`` works as in OpenSSH: a ``Host`` alias of the same files, ``user@host:port``, or a chain
``a,b``; each connection opens its own connections to the jump hosts. A jump host is configured by its own
entry in the files; ``key_files`` (with ``cert_files``) and ``known_hosts`` serve it too when its entry
names no ``IdentityFile`` or ``UserKnownHostsFile``, and ``passphrase``, ``verify_host_key`` and the
timeouts always do.
"""

from __future__ import annotations

import math
from pathlib import Path

import attrs

from .kbdint import KbdintHandler

__all__ = ["ConnectSettings"]


def _default_ssh_config() -> tuple[str, ...]:
    user_config = Path("~/.ssh/config").expanduser()
    return (str(user_config),) if user_config.is_file() else ()


def _to_paths(value: object) -> tuple[str, ...]:
    if isinstance(value, (str, Path)):
        return (str(value),)
    if isinstance(value, (list, tuple)):
        bad = [item for item in value if not isinstance(item, (str, Path))]
        if bad:
            raise TypeError(f"expected file paths (str or pathlib.Path), got {bad[0]!r} in {value!r}")
        return tuple(str(item) for item in value)
    raise TypeError(f"expected a path or a sequence of paths, got {type(value).__name__}: {value!r}")


def _check_paths(_: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for path in value:
        if not path.strip():
            raise ValueError(
                f"ConnectSettings.{attribute.name} holds an empty path. Name an existing file, or leave the "
                "setting out for the default."
            )


def _to_optional_path(value: object) -> str | None:
    return None if value is None else str(value)


def _check_host(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"ConnectSettings.{attribute.name} must be a non-empty host name or alias, got {value!r}. Give "
            "the login node's name or address (e.g. 'login.cluster.org'), or a Host alias from your ssh config."
        )
    if any(char.isspace() for char in value):
        raise ValueError(
            f"ConnectSettings.{attribute.name} is {value!r}, which contains whitespace. Give only the host name "
            "or alias; pass the user and port as user= and port=."
        )


def _check_user(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or any(char.isspace() for char in value):
        raise ValueError(
            f"ConnectSettings.{attribute.name} must be a login name without spaces, got {value!r}. Give your "
            "user name on the cluster, or None to take it from the ssh config (else the local user name)."
        )


def _check_port(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(
            f"ConnectSettings.{attribute.name} must be a TCP port from 1 to 65535, got {value!r}. Give the "
            "login node's SSH port as a whole number, or None for the ssh config's port (else 22)."
        )


def _check_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"ConnectSettings.{attribute.name} must be a positive number of seconds, got {value!r}"
        )


def _check_callable(_: object, attribute: attrs.Attribute[KbdintHandler | None], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"ConnectSettings.{attribute.name} must be a function (name, instructions, prompts) -> answers, "
            f"got {type(value).__name__}. Use slurmbatch.totp_answers(secret) or slurmbatch.terminal_prompt."
        )


@attrs.frozen(kw_only=True)
class ConnectSettings:
    """How to open an SSH connection to a login node.

    Args:
        host: Host name, address, or a ``Host`` alias from one of the ``ssh_config`` files.
        port: TCP port. ``None`` takes it from the ssh config, else 22.
        user: Login name. ``None`` takes it from the ssh config, else the local user name.
        key_files: Private key files to offer. Empty means asyncssh's defaults: the keys an ssh-agent
            holds, the config's ``IdentityFile`` entries, and ``~/.ssh/id_ed25519``, ``id_ecdsa``,
            ``id_rsa`` and friends.
        passphrase: Passphrase for encrypted key files (not shown in ``repr``).
        cert_files: OpenSSH certificates to offer with the key files (e.g. ``id_ed25519-cert.pub``), for
            sites that sign user keys. Empty means asyncssh's default: a ``<key>-cert.pub`` file next to
            each key file, when there is one.
        known_hosts: The known_hosts file to check the server's host key against. ``None`` means the
            ssh config's ``UserKnownHostsFile``, else ``~/.ssh/known_hosts``.
        verify_host_key: ``False`` accepts any host key. This is an explicit opt-out that exposes the
            connection to man-in-the-middle attacks; prefer adding the key with ``ssh-keyscan``.
        ssh_config: OpenSSH client configuration files to read. Defaults to ``~/.ssh/config`` when it
            exists; an empty tuple reads none.
        connect_timeout: Seconds allowed for TCP connect, key exchange and authentication together.
        keepalive_interval: Seconds between keepalive probes on an idle connection; after three
            unanswered probes the connection is considered lost and replaced on next use.
        kbdint: Answers keyboard-interactive prompts (one-time codes, passwords) of the login node:
            ``kbdint(name, instructions, prompts) -> answers``, a plain or a coroutine function (see
            :mod:`~slurmbatch.transport.kbdint`). Called for every connection opened, reconnects
            included, one login at a time. ``None``: keys only.
    """

    host: str = attrs.field(validator=_check_host)
    port: int | None = attrs.field(default=None, validator=_check_port)
    user: str | None = attrs.field(default=None, validator=_check_user)
    key_files: tuple[str, ...] = attrs.field(default=(), converter=_to_paths, validator=_check_paths)
    passphrase: str | None = attrs.field(default=None, repr=False)
    cert_files: tuple[str, ...] = attrs.field(default=(), converter=_to_paths, validator=_check_paths)
    known_hosts: str | None = attrs.field(default=None, converter=_to_optional_path)
    verify_host_key: bool = True
    ssh_config: tuple[str, ...] = attrs.field(factory=_default_ssh_config, converter=_to_paths)
    connect_timeout: float = attrs.field(default=30.0, validator=_check_seconds)
    keepalive_interval: float = attrs.field(default=30.0, validator=_check_seconds)
    kbdint: KbdintHandler | None = attrs.field(default=None, repr=False, validator=_check_callable)
