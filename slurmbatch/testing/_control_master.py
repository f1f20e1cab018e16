"""An OpenSSH ControlMaster started by the system ``ssh``, as a user's terminal login leaves one.

`ControlMaster.start` logs in once (key, then the one-time code through ``SSH_ASKPASS`` for the MFA
node) and backgrounds; `ControlMaster.client_config` is an ssh config naming its ``ControlPath`` and no
key at all, as a user's ``~/.ssh/config`` would, so that a session given it has no way in but the
master. `ControlMaster.stop` ends it (``ssh -O exit``), as logging out or a reboot of the laptop would.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._processes import ClusterError

__all__ = ["ControlMaster"]


@attrs.frozen
class ControlMaster:
    """A running ``ssh -M`` master connection and an ssh config that reaches the host through it.

    Attributes:
        control_path: The master's socket.
        client_config: An ssh config whose ``alias`` has ``ControlPath`` and no ``IdentityFile``.
        alias: The ``Host`` alias in ``client_config``.
    """

    control_path: str
    client_config: str
    alias: str

    @classmethod
    def start(
        cls,
        *,
        host: str,
        port: int,
        user: str,
        known_hosts: str,
        login_argv: list[str],
        env: Mapping[str, str],
    ) -> ControlMaster:
        """Log in with ``login_argv`` (``ssh -F cfg alias``) as a master; return it once it answers."""
        directory = Path(tempfile.mkdtemp(prefix="sbcm-"))  # short: a socket path has ~100 bytes
        path = str(directory / secrets.token_hex(4))
        alias = "slurmbatch-over-master"
        config = directory / "ssh_config"
        config.write_text(
            "\n".join(
                [
                    f"Host {alias}",
                    f"    HostName {host}",
                    f"    Port {port}",
                    f"    User {user}",
                    f"    UserKnownHostsFile {known_hosts}",
                    f"    ControlPath {path}",
                    "    ControlMaster no",
                    "    BatchMode yes",
                ]
            )
            + "\n"
        )
        argv = [login_argv[0], "-M", "-N", "-f", "-o", f"ControlPath={path}", "-o", "ControlPersist=yes"]
        done = subprocess.run(
            [*argv, *login_argv[1:]], env=dict(env), capture_output=True, text=True, timeout=60, check=False
        )
        master = cls(control_path=path, client_config=str(config), alias=alias)
        if done.returncode != 0 or not master.running():
            raise ClusterError(f"ssh -M did not start a ControlMaster: {done.stderr.strip()}")
        return master

    def running(self) -> bool:
        """Whether the master answers ``ssh -O check``."""
        return self._control("check").returncode == 0

    def stop(self) -> None:
        """End the master (``ssh -O exit``); nothing then reaches the host through it."""
        if self.running():
            self._control("exit")

    def _control(self, command: str) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", self.client_config, "-O", command, self.alias]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
