"""How to reach a running local cluster, as one user: what ``up --json`` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

__all__ = ["ClusterSettings"]


@attrs.frozen
class ClusterSettings:
    """How to reach a running local cluster; ``as_dict()`` is what ``up --json`` prints."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    remote_workdir: str
    slurm_conf: str
    ssh_config: str
    ssh_alias: str
    python: str
    nodes: list[str]
    cpus_per_node: int
    max_sessions: int
    max_array_size: int
    slurmdbd: bool
    sshd_log: str
    state_dir: str
    cluster_name: str

    def root_dir(self) -> Path | None:
        """The Debian root the cluster of a Slurm release other than the host's runs in (its login
        node's programs, Python and Slurm commands are there); None for the host's own release."""
        root = Path(self.state_dir) / "root"
        return root if (root / ".slurmbatch-root").exists() else None

    def admin_argv(self, argv: list[str]) -> list[str]:
        """``argv`` (e.g. ``scontrol update ...``) as root runs it against this cluster, run with
        ``SLURM_CONF`` set to :attr:`slurm_conf`: inside the cluster's own root for a release other than
        the host's, whose controller the host's commands cannot speak to."""
        root = self.root_dir()
        return argv if root is None else ["/usr/sbin/chroot", str(root), *argv]

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values."""
        return attrs.asdict(self)
