"""The connection flags every command that connects takes, named after :class:`SlurmSession`'s parameters.

``--key-file`` is ``key_file=``, ``--remote-workdir`` is ``remote_workdir=``, and so on: what works on the
command line is what to write in code. A flag left out is left out of the keyword arguments too, so the
session's own default (and the ssh config) decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._session_checks import UNSET, connect_settings
from ..transport import ConnectSettings

__all__ = ["connect_settings_of", "session_kwargs", "session_options"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--user", help="Login name (default: the ssh config's User, else the local user)."),
    click.option("--port", type=int, help="SSH port (default: the ssh config's Port, else 22)."),
    click.option(
        "--key-file",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A private key file; repeat for several (default: ssh-agent and ~/.ssh keys).",
    ),
    click.option("--cert-file", type=click.Path(dir_okay=False), help="An OpenSSH certificate for the key."),
    click.option(
        "--known-hosts",
        type=click.Path(dir_okay=False),
        help="The known_hosts file host keys are checked against (default ~/.ssh/known_hosts).",
    ),
    click.option(
        "--verify-host-key/--no-verify-host-key",
        default=None,
        help="Check the host key (default). --no-verify-host-key accepts any: unsafe.",
    ),
    click.option(
        "--ssh-config",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="An OpenSSH client config file to honour; repeat for several (default ~/.ssh/config).",
    ),
    click.option(
        "--remote-workdir", help="Where jobs keep their files on the cluster (default ~/slurmbatch)."
    ),
    click.option("--python", help="The Python jobs run (default python3)."),
    click.option(
        "--slurm-setup",
        multiple=True,
        help="A shell line run before Slurm's commands, e.g. 'module load slurm'; repeat for several.",
    ),
    click.option("--connect-timeout", type=float, help="Seconds one SSH connection attempt may take."),
    click.option(
        "--status-interval",
        type=(float, float),
        help="Shortest and longest seconds between scheduler queries (default 2 30).",
    ),
]

_NAMES = (
    "user",
    "port",
    "key_file",
    "cert_file",
    "known_hosts",
    "verify_host_key",
    "ssh_config",
    "remote_workdir",
    "python",
    "slurm_setup",
    "connect_timeout",
    "status_interval",
)


def session_options(command: F) -> F:
    """Add the connection flags to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def session_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """SlurmSession's keyword arguments from the flags given (and only those); removes them from ``params``."""
    kwargs: dict[str, Any] = {}
    for name in _NAMES:
        value = params.pop(name, None)
        if value is None or value == ():
            continue
        # Repeated flags are lists in a session's keyword arguments; status_interval stays a pair.
        kwargs[name] = list(value) if isinstance(value, tuple) and name != "status_interval" else value
    return kwargs


def connect_settings_of(host: str, options: dict[str, Any]) -> ConnectSettings:
    """The SSH settings a session opened with ``options`` (its keyword arguments) would use."""
    return connect_settings(
        host,
        user=options.get("user"),
        port=options.get("port"),
        key_file=options.get("key_file"),
        cert_file=options.get("cert_file"),
        passphrase=options.get("passphrase"),
        known_hosts=options.get("known_hosts"),
        verify_host_key=options.get("verify_host_key", True),
        ssh_config=options.get("ssh_config", UNSET),
        connect_timeout=options.get("connect_timeout", 30.0),
    )
