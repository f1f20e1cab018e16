"""A real Slurm cluster (munged, slurmctld, N slurmd, optional slurmdbd) and sshd, on 127.0.0.1.

Everything lives in one state directory; the only changes outside it are the unprivileged job user (and
any login users), created once. ``up()`` is idempotent: a healthy cluster with the same options is reused.
``down()`` stops exactly the processes the cluster started, by pid, and whatever they spawned (jobs
included). The Slurm daemons are started by `_slurm_daemons`, the sshds, login users and jump hosts by
`_login_nodes`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from . import _install, _root
from ._cluster_settings import ClusterSettings
from ._configs import CGROUP_CONF, ClusterOptions, slurm_conf, slurmdbd_conf
from ._layout import ClusterLayout, ClusterPorts
from ._login_nodes import SSH_ALIAS, JumpHosts, LoginNodes
from ._mfa_login import MfaLoginNode, start_mfa_login_node
from ._processes import ClusterError, kill_all, log_tail, processes_marked, stop
from ._slurm_daemons import nodes_idle, start_accounting, start_munge, start_slurm
from ._ssh_configs import SftpServer, SshdVariant, ssh_client_config
from ._state import MARKER, StateFile, daemons_of

__all__ = [
    "DEFAULT_STATE_DIR",
    "MARKER",
    "SSH_ALIAS",
    "ClusterError",
    "ClusterOptions",
    "ClusterSettings",
    "JumpHosts",
    "LocalCluster",
]

DEFAULT_STATE_DIR = Path(os.environ.get("SLURMBATCH_CLUSTER_DIR", "/var/lib/slurmbatch/cluster"))


def _hostname() -> str:
    return socket.gethostname().split(".")[0]


class LocalCluster:
    """A local Slurm cluster reached through a real sshd, for tests, demos and benchmarks.

    ``LocalCluster().up()`` installs what is missing (as root), starts everything and returns
    :class:`ClusterSettings`; ``down()`` stops it. Needs root. Once it runs, :meth:`start_sshd` adds
    login nodes that behave like real sites' (banner, external SFTP server, no forwarding),
    :meth:`login_user` adds users with other login shells and noisy start-up files, and
    :meth:`start_jump_hosts` puts jump hosts in front of a login node.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        options: ClusterOptions | None = None,
        *,
        user: str = "slurmbatch",
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR
        self.options = options or ClusterOptions()
        self.user = user
        chroot_release = _root.release(self.options.slurm)
        root = None if chroot_release is None else _root.Root.in_state_dir(self.state_dir, chroot_release)
        self._store = StateFile(self.state_dir, root)
        self._logins = LoginNodes(self._store, user)

    # ----------------------------------------------------------------------------------------- up
    def up(self) -> ClusterSettings:
        """Start the cluster, or reuse it if it already runs healthy with the same options."""
        _install.ensure_root()
        _install.install_packages(accounting=self.options.slurmdbd)
        state = self._store.load()
        if (
            state is not None
            and state.get("options") == attrs.asdict(self.options)
            and self._config_current(state)
            and self._healthy(state)
        ):
            return self._settings(state)
        self.down()
        return self._start()

    def _config_current(self, state: dict[str, Any]) -> bool:
        """False when this version of slurmbatch would write another slurm.conf: restart with it."""
        layout = self._store.layout(state)
        try:
            written = layout.slurm_conf.read_text()
        except OSError:
            return False
        return written == slurm_conf(layout, self.options, hostname=_hostname())

    def _healthy(self, state: dict[str, Any]) -> bool:
        daemons = daemons_of(state)
        if not daemons or not all(d.is_running() for d in daemons):
            return False
        layout = self._store.layout(state)
        return nodes_idle(self._store, layout) and self._logins.ssh_works(layout)

    def _start(self) -> ClusterSettings:
        self.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        layout = ClusterLayout(
            state_dir=self.state_dir,
            ports=ClusterPorts.pick(self.options.nodes),
            node_count=self.options.nodes,
        )
        for directory in (layout.run_dir, layout.log_dir, layout.etc_dir, layout.jobcomp_file.parent):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        # A fresh start forgets old jobs: stale controller state slows start-up and confuses tests.
        shutil.rmtree(self.state_dir / "slurmctld", ignore_errors=True)
        shutil.rmtree(self.state_dir / "slurmd", ignore_errors=True)
        user = _install.ensure_job_user(self.user)
        _install.ensure_keys(layout, user=user)
        root = self._store.root
        if root is not None:
            if self.options.slurmdbd:
                # Found on trixie: 24.11.5's slurmdbd stops at start against its MariaDB 11.8
                # (_check_mysql_concat_is_sane: "select @var := concat('')" fails with error 5027).
                raise ClusterError(
                    f"slurmdbd is not offered for Slurm {self.options.slurm}: that root's slurmdbd cannot use "
                    "its MariaDB. Run it without --slurmdbd: sacct then reads the job completion records."
                )
            root.unpack()
            root.mount()
            root.add_host_user(self.user)
        python = _install.ensure_job_env(layout, root=root)
        self._write_configs(layout, user)
        state: dict[str, Any] = {
            "options": attrs.asdict(self.options),
            "ports": attrs.asdict(layout.ports),
            "python": python,
            "daemons": [],
            "launch": {},
            "extra_sshd": {},
        }
        self._store.save(state)
        try:
            start_munge(self._store, state)
            if self.options.slurmdbd:
                start_accounting(self._store, state, user=self.user)
            start_slurm(self._store, state)
            main = SshdVariant(max_sessions=self.options.max_sessions, max_startups=self.options.max_startups)
            self._logins.start(state, port=layout.ports.sshd, variant=main)
        except BaseException:
            self.down()
            raise
        return self._settings(state)

    def _write_configs(self, layout: ClusterLayout, user: Any) -> None:
        layout.slurm_conf.write_text(slurm_conf(layout, self.options, hostname=_hostname()))
        layout.slurm_conf.chmod(0o644)
        if self._store.root is not None:
            (layout.etc_dir / "cgroup.conf").write_text(CGROUP_CONF)
        jobcomp = layout.jobcomp_file
        jobcomp.touch()
        # sacct -c opens the job completion file for appending, so the job user must own it.
        os.chown(jobcomp, user.pw_uid, user.pw_gid)
        os.chown(jobcomp.parent, user.pw_uid, user.pw_gid)
        layout.ssh_config.write_text(
            ssh_client_config(layout, alias=SSH_ALIAS, user=self.user, port=layout.ports.sshd)
        )
        if self.options.slurmdbd:
            layout.slurmdbd_conf.write_text(slurmdbd_conf(layout))
            # slurmdbd refuses a config readable by others: it holds the database password.
            layout.slurmdbd_conf.chmod(0o600)

    # ----------------------------------------------------------------------------------------- login side
    def start_sshd(
        self,
        *,
        max_sessions: int = 10,
        max_startups: str = "10:30:100",
        banner: str | None = None,
        sftp: SftpServer = "internal",
        tcp_forwarding: bool = True,
        login_users: bool = False,
    ) -> int:
        """Start one more sshd for the same cluster (same Slurm, host key and user key); return its port.

        Tests use it to exercise MaxSessions/MaxStartups without restarting Slurm, and to meet login
        nodes as sites run them: ``banner`` is text sent before authentication (sshd's ``Banner``);
        ``sftp="external"`` runs Debian's ``/usr/lib/openssh/sftp-server`` (started through the user's
        login shell, so a printing ``~/.bashrc`` breaks SFTP), ``sftp="none"`` offers no SFTP at all;
        ``tcp_forwarding=False`` refuses ProxyJump/``ssh -W`` through it; ``login_users=True`` lets in the
        users made by :meth:`login_user` as well as the job user. Its log is ``log/sshd-<port>.log``.
        ``down()`` stops it.
        """
        variant = SshdVariant(
            max_sessions=max_sessions,
            max_startups=max_startups,
            banner=banner,
            sftp=sftp,
            tcp_forwarding=tcp_forwarding,
            login_users=login_users,
        )
        return self._logins.start_extra(variant)

    def login_user(
        self,
        name: str,
        *,
        shell: str = "/bin/bash",
        dotfiles: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> ClusterSettings:
        """Add (or update) a login user like real sites have; return the settings to reach it.

        ``shell`` is its login shell (``/bin/bash``, ``/usr/bin/tcsh``, ...; on the host's release the
        Debian package is installed when missing, another release's root has bash, dash and tcsh). ``dotfiles`` maps paths in its home directory to their text, e.g.
        `NOISY_BASHRC` (``~/.bashrc`` printing a line to stdout) or `SITE_NOTICE_CSHRC` (``~/.cshrc``
        writing a notice to stderr); every other start-up file is reset to Debian's quiet default. The
        user submits to the same Slurm and runs the same job-side Python (``settings.python``); its
        ``remote_workdir`` is in its home directory. ``port`` is an sshd from
        ``start_sshd(login_users=True)``; by default the cluster's own login-user sshd, started on first
        use. The user stays after ``down()``, like the job user; its jobs do not.
        """
        base = self.settings()
        return self._logins.login_user(base, name, shell=shell, dotfiles=dotfiles or {}, port=port)

    def start_jump_hosts(self, *, user: str | None = None) -> JumpHosts:
        """Start a login sshd behind three jump sshds; return the ssh client config of the ways there.

        See :class:`JumpHosts` for the aliases (ProxyJump through an alias, ``user@host:port``, a chain
        of two, ProxyCommand, a jump host refusing forwarding, one down, one refusing the key). Every
        sshd logs to its own file, so logins can be counted on each. ``user`` is the job user by
        default, or a login user. ``down()`` stops them.
        """
        return self._logins.start_jump_hosts(user)

    def start_mfa_login_node(self) -> MfaLoginNode:
        """Start (or reuse) a login sshd that asks for the job user's key and then a real one-time code.

        Its PAM stack runs Google Authenticator's module (``libpam-google-authenticator``, installed when
        missing) against a TOTP secret of the cluster's making: ``slurmbatch.totp_answers(node.totp_secret)``
        logs in, and so does the system ``ssh`` under ``node.ssh_env()``. Offered on the host's Slurm
        22.05 cluster only. ``down()`` stops it.
        """
        if self._store.root is not None:
            raise ClusterError("start_mfa_login_node() is offered on the host's Slurm 22.05 cluster only.")
        return start_mfa_login_node(self._store, self.settings().user)

    def drop_ssh_connections(self, port: int | None = None) -> int:
        """Kill the sshd process of every open connection to the sshd on ``port`` (default: the main one),
        as a network failure or a login-node reboot would end them; the listener stays up. Returns how
        many connections were dropped."""
        return self._logins.drop_connections(port)

    # ----------------------------------------------------------------------------------------- daemons
    def stop_daemon(self, name: str) -> None:
        """Stop one daemon (e.g. ``"sshd-<port>"``) until :meth:`restart_daemon` starts it again."""
        state = self._store.require()
        daemons = daemons_of(state)
        if name not in state["launch"]:
            raise ClusterError(f"No daemon named {name!r}; known: {', '.join(d.name for d in daemons)}")
        stop([d for d in daemons if d.name == name])
        state["daemons"] = [attrs.asdict(d) for d in daemons if d.name != name]
        self._store.save(state)

    def restart_daemon(self, name: str) -> None:
        """Stop and start one daemon (e.g. ``"slurmctld"`` or ``"sshd-<port>"``), keeping its state on disk."""
        self.stop_daemon(name)
        state = self._store.require()
        launch = state["launch"][name]
        self._store.launch(state, name, launch["argv"], user=launch["user"])

    # ----------------------------------------------------------------------------------------- down/status
    def down(self) -> None:
        """Cancel the cluster users' jobs, stop every process the cluster started, and what they spawned."""
        state = self._store.load()
        if state is None:
            return
        daemons = daemons_of(state)
        ctld = [d for d in daemons if d.name == "slurmctld" and d.is_running()]
        if ctld:
            layout = self._store.layout(state)
            for user in [self.user, *state.get("login_users", [])]:
                subprocess.run(
                    self._store.command(["scancel", "--user", user]),
                    env=self._store.env(layout),
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
        # sshd first (no new work), then the nodes, then the controller and its helpers.
        order = sorted(
            daemons,
            key=lambda d: ("sshd", "slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged").index(
                d.name.split("-")[0]
            ),
        )
        stop(order)
        # Daemons carry our marker; job processes carry SLURM_CONF (set by our sshd) instead.
        markers = [(MARKER, str(self.state_dir)), ("SLURM_CONF", str(self.state_dir / "etc" / "slurm.conf"))]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            leftover = [pid for marker in markers for pid in processes_marked(*marker)]
            if not leftover:
                break
            kill_all(leftover)
            time.sleep(0.1)
        if self._store.root is not None:
            # Whatever still runs inside the root (a job's stray child) would keep its mounts busy.
            kill_all(self._store.root.processes())
            self._store.root.unmount()
        state["daemons"] = []
        state["extra_sshd"] = {}
        state.pop("login_sshd", None)
        self._store.save(state)

    def status(self) -> dict[str, Any]:
        """Which daemons run, and whether the nodes are idle; ``{"running": False}`` when not started."""
        state = self._store.load()
        daemons = daemons_of(state)
        if state is None or not daemons:
            return {"running": False, "state_dir": str(self.state_dir)}
        layout = self._store.layout(state)
        alive = {d.name: d.is_running() for d in daemons}
        healthy = all(alive.values()) and nodes_idle(self._store, layout)
        return {
            "running": all(alive.values()),
            "healthy": healthy,
            "daemons": alive,
            "settings": self._settings(state).as_dict(),
        }

    def settings(self) -> ClusterSettings:
        """Settings of the running cluster (raises ClusterError if it was never started)."""
        return self._settings(self._store.require())

    def _settings(self, state: dict[str, Any]) -> ClusterSettings:
        layout = self._store.layout(state)
        options = ClusterOptions(**state["options"])
        return ClusterSettings(
            host="127.0.0.1",
            port=layout.ports.sshd,
            user=self.user,
            key_file=str(layout.user_key),
            known_hosts=str(layout.known_hosts),
            remote_workdir=f"/home/{self.user}/work-{layout.cluster_name}",
            slurm_conf=str(layout.slurm_conf),
            ssh_config=str(layout.ssh_config),
            ssh_alias=SSH_ALIAS,
            python=state["python"],
            nodes=layout.node_names,
            cpus_per_node=options.cpus_per_node,
            max_sessions=options.max_sessions,
            max_array_size=options.max_array_size,
            slurmdbd=options.slurmdbd,
            sshd_log=str(layout.sshd_log(layout.ports.sshd)),
            state_dir=str(self.state_dir),
            cluster_name=layout.cluster_name,
        )

    def describe_failure(self) -> str:
        """Tails of the main logs, for error messages."""
        state = self._store.load()
        if state is None:
            return ""
        layout = self._store.layout(state)
        return "".join(log_tail(layout.log_dir / name) for name in ("slurmctld.log", "slurmd-node1.log"))
