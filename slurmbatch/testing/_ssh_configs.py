"""sshd and ssh client configuration of the local cluster, rendered from its layout. Pure: no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

from ._layout import ClusterLayout

__all__ = [
    "EXTERNAL_SFTP_SERVER",
    "JumpClientConfig",
    "SftpServer",
    "SshdVariant",
    "jump_client_config",
    "ssh_client_config",
    "sshd_config",
]

#: Debian's default SFTP subsystem: a program sshd starts through the user's login shell.
EXTERNAL_SFTP_SERVER = "/usr/lib/openssh/sftp-server"

SftpServer = Literal["internal", "external", "none"]


@attrs.frozen
class SshdVariant:
    """How one sshd of the cluster behaves; the defaults render the main sshd's config.

    Attributes:
        max_sessions: ``MaxSessions``: channels per connection.
        max_startups: ``MaxStartups``: unauthenticated connections before sshd starts dropping new ones.
        banner: Text sshd sends before authentication (``Banner``), as many sites do; ``None`` for none.
        sftp: ``"internal"`` (``internal-sftp``, in sshd itself), ``"external"`` (Debian's default
            ``/usr/lib/openssh/sftp-server``, started through the user's login shell, so start-up files
            that print break it) or ``"none"`` (no SFTP subsystem at all).
        tcp_forwarding: ``False`` renders ``AllowTcpForwarding no``: a jump host that refuses ProxyJump.
        login_users: Also let in the cluster's login users (the members of its login group), not only
            the job user.
    """

    max_sessions: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    max_startups: str = "10:30:100"
    banner: str | None = None
    sftp: SftpServer = attrs.field(
        default="internal", validator=attrs.validators.in_(("internal", "external", "none"))
    )
    tcp_forwarding: bool = True
    login_users: bool = False


def sshd_config(
    layout: ClusterLayout,
    variant: SshdVariant,
    *,
    user: str,
    port: int,
    allow_groups: Sequence[str] = (),
    banner_file: Path | None = None,
) -> str:
    """Render an sshd_config for key-only logins on 127.0.0.1:``port``.

    Only ``user`` may log in, or, with ``allow_groups``, the members of those groups (``AllowGroups``
    instead of ``AllowUsers``: sshd would demand both). ``banner_file`` holds ``variant.banner``.
    """
    allow = f"AllowGroups {' '.join(allow_groups)}" if allow_groups else f"AllowUsers {user}"
    subsystem = {
        "internal": ["Subsystem sftp internal-sftp"],
        "external": [f"Subsystem sftp {EXTERNAL_SFTP_SERVER}"],
        "none": [],
    }[variant.sftp]
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {layout.host_key}",
        f"PidFile {layout.run_dir / f'sshd-{port}.pid'}",
        f"AuthorizedKeysFile {layout.authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        allow,
        f"MaxSessions {variant.max_sessions}",
        f"MaxStartups {variant.max_startups}",
        *subsystem,
        # Lets sbatch/squeue run over ssh find this cluster's config instead of /etc/slurm.
        f"SetEnv SLURM_CONF={layout.slurm_conf}",
        # VERBOSE logs every accepted connection: tests and benchmarks count them.
        "LogLevel VERBOSE",
    ]
    if banner_file is not None:
        lines.append(f"Banner {banner_file}")
    if not variant.tcp_forwarding:
        lines.append("AllowTcpForwarding no")
    return "\n".join(lines) + "\n"


def _host_block(
    layout: ClusterLayout, alias: str, *, user: str, port: int, key: Path | None = None
) -> list[str]:
    return [
        f"Host {alias}",
        "    HostName 127.0.0.1",
        f"    Port {port}",
        f"    User {user}",
        f"    IdentityFile {key or layout.user_key}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {layout.known_hosts}",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
    ]


def ssh_client_config(layout: ClusterLayout, *, alias: str, user: str, port: int) -> str:
    """Render an ssh_config usable as ``ssh -F FILE <alias>``."""
    return "\n".join(_host_block(layout, alias, user=user, port=port)) + "\n"


@attrs.frozen
class JumpClientConfig:
    """The sshds and keys an ssh client config of jump hosts is rendered from.

    ``login`` is the login node's port; ``jump``, ``second_jump`` and ``no_forwarding_jump`` are jump
    sshds (the last one with ``AllowTcpForwarding no``); ``down_port`` has nothing listening; and
    ``unauthorized_key`` is a key no sshd of the cluster accepts.
    """

    user: str
    login: int
    jump: int
    second_jump: int
    no_forwarding_jump: int
    down_port: int
    unauthorized_key: Path


def jump_client_config(layout: ClusterLayout, ports: JumpClientConfig, *, config_file: Path) -> str:
    """Render an ssh_config (``config_file``) where the login node is reached through jump hosts.

        Jump hosts: ``jump``, ``jump2``, ``jump-no-forwarding``, ``jump-down``, ``jump-wrong-key``. The login
        node: ``login`` (directly), ``login-via-alias`` (``ProxyJump jump``), ``login-via-user-host``
        (``ProxyJump user@127.0.0.1:port``), ``login-via-chain`` (``ProxyJump jump,jump2``),
        ``login-via-proxy-command`` (``ssh -W`` through ``jump``), and one alias through each failing jump host
    (``login-via-chain-no-forwarding`` has the refusing one first in a chain).
    """
    user = ports.user
    blocks = [
        _host_block(layout, "jump", user=user, port=ports.jump),
        _host_block(layout, "jump2", user=user, port=ports.second_jump),
        _host_block(layout, "jump-no-forwarding", user=user, port=ports.no_forwarding_jump),
        _host_block(layout, "jump-down", user=user, port=ports.down_port),
        _host_block(layout, "jump-wrong-key", user=user, port=ports.jump, key=ports.unauthorized_key),
        _host_block(layout, "login", user=user, port=ports.login),
    ]
    login_via = {
        "login-via-alias": "ProxyJump jump",
        "login-via-user-host": f"ProxyJump {user}@127.0.0.1:{ports.jump}",
        "login-via-chain": "ProxyJump jump,jump2",
        "login-via-proxy-command": f"ProxyCommand ssh -F {config_file} -W %h:%p jump",
        "login-via-no-forwarding": "ProxyJump jump-no-forwarding",
        "login-via-chain-no-forwarding": "ProxyJump jump-no-forwarding,jump2",
        "login-via-down-jump": "ProxyJump jump-down",
        "login-via-wrong-key-jump": "ProxyJump jump-wrong-key",
    }
    for alias, route in login_via.items():
        # The first value of an option wins in ssh_config, so the route goes before the host's block.
        block = _host_block(layout, alias, user=user, port=ports.login)
        blocks.append([block[0], f"    {route}", *block[1:]])
    # A hop written as user@host:port has no alias: this block gives it the key and known_hosts.
    blocks.append(
        [
            "Host 127.0.0.1",
            f"    IdentityFile {layout.user_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {layout.known_hosts}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
        ]
    )
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"
