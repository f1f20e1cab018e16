"""Where the local cluster keeps its files, and which ports it uses."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import attrs


@attrs.frozen
class ClusterPorts:
    """TCP ports on 127.0.0.1, chosen free once and kept while the state directory lives."""

    slurmctld: int
    slurmdbd: int
    mariadb: int
    sshd: int
    slurmd: tuple[int, ...]

    @classmethod
    def pick(cls, nodes: int) -> ClusterPorts:
        """Pick free ports for a controller, slurmdbd, MariaDB, sshd and ``nodes`` slurmd daemons."""
        free = free_ports(4 + nodes)
        return cls(slurmctld=free[0], slurmdbd=free[1], mariadb=free[2], sshd=free[3], slurmd=tuple(free[4:]))


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    The kernel's ephemeral range never includes slurmdbd's default 6819, so ports cannot collide with it.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@attrs.frozen
class ClusterLayout:
    """The files of one local cluster, all under ``state_dir``."""

    state_dir: Path
    ports: ClusterPorts
    node_count: int

    @property
    def cluster_name(self) -> str:
        # Short and lowercase, as Slurm wants; a hash of the whole path keeps apart two clusters whose
        # state directories share a name (their work directories on the login node are named after it).
        readable = "".join(ch for ch in self.state_dir.name.lower() if ch.isalnum())[-10:]
        return f"sb{readable}{hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:4]}"

    @property
    def node_names(self) -> list[str]:
        return [f"node{i + 1}" for i in range(self.node_count)]

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc_dir / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd has no -f option: it reads slurmdbd.conf next to $SLURM_CONF.
        return self.etc_dir / "slurmdbd.conf"

    @property
    def jobcomp_file(self) -> Path:
        return self.state_dir / "jobcomp" / "jobcomp.txt"

    @property
    def munge_dir(self) -> Path:
        return self.state_dir / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "etc" / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "run" / "munge.socket"

    @property
    def mariadb_dir(self) -> Path:
        return self.state_dir / "mariadb"

    @property
    def mariadb_socket(self) -> Path:
        return self.mariadb_dir / "mysqld.sock"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def user_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "ssh_config"

    def sshd_config(self, port: int) -> Path:
        return self.ssh_dir / f"sshd_config-{port}"

    def sshd_log(self, port: int) -> Path:
        return self.log_dir / f"sshd-{port}.log"

    def sshd_banner(self, port: int) -> Path:
        return self.ssh_dir / f"banner-{port}"

    @property
    def unauthorized_key(self) -> Path:
        """A key no sshd of the cluster accepts: for a jump host that refuses the key."""
        return self.ssh_dir / "id_ed25519_unauthorized"

    def login_ssh_config(self, user: str) -> Path:
        return self.ssh_dir / f"ssh_config-{user}"

    def jump_ssh_config(self, login_port: int) -> Path:
        return self.ssh_dir / f"ssh_config-jumps-{login_port}"

    @property
    def job_env(self) -> Path:
        return self.state_dir / "jobenv"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"
