"""How to reach a running local cluster, as one user: what ``up --json`` prints."""

from __future__ import annotations

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

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values."""
        return attrs.asdict(self)
