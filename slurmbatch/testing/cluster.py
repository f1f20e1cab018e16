"""A real Slurm cluster (munged, slurmctld, N slurmd, optional slurmdbd) and sshd, on 127.0.0.1.

Everything lives in one state directory; the only change outside it is the unprivileged job user, created
once. ``up()`` is idempotent: a healthy cluster with the same options is reused. ``down()`` stops exactly
the processes the cluster started, by pid, and whatever they spawned (jobs included).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs

from . import _install
from ._configs import (
    MARIADB_PASSWORD,
    MARIADB_USER,
    ClusterOptions,
    slurm_conf,
    slurmdbd_conf,
    ssh_client_config,
    sshd_config,
)
from ._layout import ClusterLayout, ClusterPorts, free_ports
from ._processes import (
    ClusterError,
    Daemon,
    children_of,
    kill_all,
    log_tail,
    processes_marked,
    run,
    spawn,
    stop,
    succeeds,
    wait_until,
)

__all__ = ["DEFAULT_STATE_DIR", "ClusterError", "ClusterOptions", "ClusterSettings", "LocalCluster"]

DEFAULT_STATE_DIR = Path(os.environ.get("SLURMBATCH_CLUSTER_DIR", "/var/lib/slurmbatch/cluster"))
MARKER = "SLURMBATCH_LOCAL_CLUSTER"
SSH_ALIAS = "slurmbatch-local"


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


def _hostname() -> str:
    return socket.gethostname().split(".")[0]


class LocalCluster:
    """A local Slurm cluster reached through a real sshd, for tests, demos and benchmarks.

    ``LocalCluster().up()`` installs what is missing (as root), starts everything and returns
    :class:`ClusterSettings`; ``down()`` stops it. Needs root.
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

    # ----------------------------------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any] | None:
        path = self.state_dir / "cluster.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.state_dir / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def _daemons(self, state: dict[str, Any] | None) -> list[Daemon]:
        return [Daemon(**d) for d in (state or {}).get("daemons", [])]

    def _layout(self, state: dict[str, Any]) -> ClusterLayout:
        ports = state["ports"]
        return ClusterLayout(
            state_dir=self.state_dir,
            ports=ClusterPorts(**{**ports, "slurmd": tuple(ports["slurmd"])}),
            node_count=len(ports["slurmd"]),
        )

    def _env(self, layout: ClusterLayout) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(layout.slurm_conf), **{MARKER: str(self.state_dir)})

    # ----------------------------------------------------------------------------------------- up
    def up(self) -> ClusterSettings:
        """Start the cluster, or reuse it if it already runs healthy with the same options."""
        _install.ensure_root()
        _install.install_packages(accounting=self.options.slurmdbd)
        state = self._load_state()
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
        layout = self._layout(state)
        try:
            written = layout.slurm_conf.read_text()
        except OSError:
            return False
        return written == slurm_conf(layout, self.options, hostname=_hostname())

    def _healthy(self, state: dict[str, Any]) -> bool:
        daemons = self._daemons(state)
        if not daemons or not all(d.is_running() for d in daemons):
            return False
        layout = self._layout(state)
        return self._nodes_idle(layout) and self._ssh_works(layout)

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
        python = _install.ensure_job_env(layout)
        self._write_configs(layout, user)
        state: dict[str, Any] = {
            "options": attrs.asdict(self.options),
            "ports": attrs.asdict(layout.ports),
            "python": python,
            "daemons": [],
            "launch": {},
            "extra_sshd": {},
        }
        self._save_state(state)
        try:
            self._start_munge(layout, state)
            if self.options.slurmdbd:
                self._start_accounting(layout, state)
            self._start_slurm(layout, state)
            self._start_sshd(layout, state, port=layout.ports.sshd, options=self.options)
        except BaseException:
            self.down()
            raise
        return self._settings(state)

    def _launch(
        self,
        state: dict[str, Any],
        layout: ClusterLayout,
        name: str,
        argv: list[str],
        *,
        user: str | None = None,
    ) -> Daemon:
        """Start a daemon and record it (and how it was started, for restarts) in the state file."""
        daemon = spawn(name, argv, log=layout.log_dir / f"{name}.out", env=self._env(layout), user=user)
        state["daemons"].append(attrs.asdict(daemon))
        state["launch"][name] = {"argv": argv, "user": user}
        self._save_state(state)
        return daemon

    def _write_configs(self, layout: ClusterLayout, user: Any) -> None:
        layout.slurm_conf.write_text(slurm_conf(layout, self.options, hostname=_hostname()))
        layout.slurm_conf.chmod(0o644)
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

    def _start_munge(self, layout: ClusterLayout, state: dict[str, Any]) -> None:
        import pwd

        munge = pwd.getpwnam("munge")
        for sub, mode in (("", 0o755), ("etc", 0o700), ("run", 0o755), ("log", 0o700), ("lib", 0o700)):
            path = layout.munge_dir / sub
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            path.chmod(mode)
            os.chown(path, munge.pw_uid, munge.pw_gid)
        if not layout.munge_key.exists():
            layout.munge_key.write_bytes(secrets.token_bytes(1024))
        layout.munge_key.chmod(0o400)
        os.chown(layout.munge_key, munge.pw_uid, munge.pw_gid)
        log = layout.munge_dir / "log" / "munged.log"
        self._launch(
            state,
            layout,
            "munged",
            [
                "/usr/sbin/munged",
                "--foreground",
                f"--socket={layout.munge_socket}",
                f"--key-file={layout.munge_key}",
                f"--pid-file={layout.munge_dir / 'run' / 'munged.pid'}",
                f"--seed-file={layout.munge_dir / 'lib' / 'munged.seed'}",
                f"--log-file={log}",
            ],
            user="munge",
        )
        wait_until(
            lambda: (
                layout.munge_socket.exists()
                and succeeds(["munge", "-n", "-S", str(layout.munge_socket)], timeout=5)
            ),
            timeout=30,
            what="munged answering on its socket",
            log=layout.log_dir / "munged.out",
        )

    def _start_accounting(self, layout: ClusterLayout, state: dict[str, Any]) -> None:
        datadir = layout.mariadb_dir / "data"
        if not (datadir / "mysql").exists():
            layout.mariadb_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={datadir}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                timeout=300,
            )
        self._launch(
            state,
            layout,
            "mariadbd",
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={datadir}",
                f"--socket={layout.mariadb_socket}",
                f"--pid-file={layout.run_dir / 'mariadb.pid'}",
                "--bind-address=127.0.0.1",
                f"--port={layout.ports.mariadb}",
                "--innodb-buffer-pool-size=64M",
                "--skip-name-resolve",
            ],
        )
        client = ["mariadb", "--no-defaults", "-uroot", f"--socket={layout.mariadb_socket}"]
        wait_until(
            lambda: succeeds([*client, "-e", "SELECT 1"], timeout=5),
            timeout=60,
            what="MariaDB accepting connections",
            log=layout.log_dir / "mariadbd.out",
        )
        grant = (
            f"CREATE USER IF NOT EXISTS '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_PASSWORD}';"
            f"GRANT ALL ON *.* TO '{MARIADB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;"
        )
        run([*client, "-e", grant])
        self._launch(state, layout, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
        wait_until(
            lambda: succeeds(["sacctmgr", "-n", "list", "cluster"], env=self._env(layout), timeout=10),
            timeout=60,
            what="slurmdbd answering sacctmgr",
            log=layout.log_dir / "slurmdbd.log",
        )
        # The cluster must be registered before slurmctld starts, or accounting stays off until it is.
        listed = run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self._env(layout))
        if layout.cluster_name not in listed.split():
            run(["sacctmgr", "-i", "add", "cluster", layout.cluster_name], env=self._env(layout))
        accounts = run(["sacctmgr", "-n", "-P", "list", "user", "format=user"], env=self._env(layout))
        if self.user not in accounts.split():
            run(
                ["sacctmgr", "-i", "add", "account", "local", f"cluster={layout.cluster_name}"],
                env=self._env(layout),
            )
            run(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "user",
                    self.user,
                    "account=local",
                    f"cluster={layout.cluster_name}",
                ],
                env=self._env(layout),
            )

    def _start_slurm(self, layout: ClusterLayout, state: dict[str, Any]) -> None:
        env = self._env(layout)
        conf = str(layout.slurm_conf)
        self._launch(state, layout, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", conf])
        wait_until(
            lambda: succeeds(["scontrol", "ping"], env=env, timeout=5),
            timeout=60,
            what="slurmctld answering `scontrol ping`",
            log=layout.log_dir / "slurmctld.log",
        )
        for node in layout.node_names:
            (self.state_dir / "slurmd" / node).mkdir(mode=0o755, parents=True, exist_ok=True)
            self._launch(state, layout, f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node, "-f", conf])
        wait_until(
            lambda: self._nodes_idle(layout),
            timeout=90,
            what=f"all {len(layout.node_names)} nodes idle in sinfo",
            log=layout.log_dir / "slurmctld.log",
        )

    def _nodes_idle(self, layout: ClusterLayout) -> bool:
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%N %t"],
                capture_output=True,
                text=True,
                env=self._env(layout),
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
        return out.returncode == 0 and all(
            states.get(n) in ("idle", "mix", "alloc") for n in layout.node_names
        )

    def _start_sshd(
        self, layout: ClusterLayout, state: dict[str, Any], *, port: int, options: ClusterOptions
    ) -> Daemon:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = layout.sshd_config(port)
        config.write_text(sshd_config(layout, options, user=self.user, port=port))
        log = layout.sshd_log(port)
        daemon = self._launch(
            state, layout, f"sshd-{port}", ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)]
        )
        ports = [layout.ports.sshd, *map(int, state["extra_sshd"]), port]
        _install.write_known_hosts(layout, sorted(set(ports)))
        wait_until(
            lambda: self._ssh_works(layout, port),
            timeout=30,
            what=f"sshd accepting logins on {port}",
            log=log,
        )
        return daemon

    def _ssh_argv(self, layout: ClusterLayout, port: int | None = None) -> list[str]:
        argv = ["ssh", "-F", str(layout.ssh_config)]
        if port is not None:
            argv += ["-p", str(port)]
        return [*argv, SSH_ALIAS]

    def _ssh_works(self, layout: ClusterLayout, port: int | None = None) -> bool:
        return succeeds([*self._ssh_argv(layout, port), "true"], timeout=10)

    # ----------------------------------------------------------------------------------------- more sshd
    def start_sshd(self, *, max_sessions: int = 10, max_startups: str = "10:30:100") -> int:
        """Start one more sshd for the same cluster with other limits; return its port.

        Tests use it to exercise MaxSessions/MaxStartups without restarting Slurm. ``down()`` stops it.
        """
        state = self._require_state()
        layout = self._layout(state)
        port = free_ports(1)[0]
        options = attrs.evolve(self.options, max_sessions=max_sessions, max_startups=max_startups)
        self._start_sshd(layout, state, port=port, options=options)
        state["extra_sshd"][str(port)] = {"max_sessions": max_sessions, "max_startups": max_startups}
        self._save_state(state)
        return port

    def drop_ssh_connections(self, port: int | None = None) -> int:
        """Kill the sshd process of every open connection to the sshd on ``port`` (default: the main one),
        as a network failure or a login-node reboot would end them; the listener stays up. Returns how
        many connections were dropped."""
        state = self._require_state()
        name = f"sshd-{port or self._layout(state).ports.sshd}"
        listeners = [d for d in self._daemons(state) if d.name == name and d.is_running()]
        if not listeners:
            raise ClusterError(f"No running daemon named {name!r}; is the cluster up?")
        connections = children_of(listeners[0].pid)
        kill_all(connections)
        return len(connections)

    def stop_daemon(self, name: str) -> None:
        """Stop one daemon (e.g. ``"sshd-<port>"``) until :meth:`restart_daemon` starts it again."""
        state = self._require_state()
        daemons = self._daemons(state)
        if name not in state["launch"]:
            raise ClusterError(f"No daemon named {name!r}; known: {', '.join(d.name for d in daemons)}")
        stop([d for d in daemons if d.name == name])
        state["daemons"] = [attrs.asdict(d) for d in daemons if d.name != name]
        self._save_state(state)

    def restart_daemon(self, name: str) -> None:
        """Stop and start one daemon (e.g. ``"slurmctld"`` or ``"sshd-<port>"``), keeping its state on disk."""
        self.stop_daemon(name)
        state = self._require_state()
        launch = state["launch"][name]
        self._launch(state, self._layout(state), name, launch["argv"], user=launch["user"])

    # ----------------------------------------------------------------------------------------- down/status
    def down(self) -> None:
        """Cancel the job user's jobs, stop every process the cluster started, and anything they spawned."""
        state = self._load_state()
        if state is None:
            return
        daemons = self._daemons(state)
        ctld = [d for d in daemons if d.name == "slurmctld" and d.is_running()]
        if ctld:
            layout = self._layout(state)
            subprocess.run(
                ["scancel", "--user", self.user],
                env=self._env(layout),
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
        state["daemons"] = []
        state["extra_sshd"] = {}
        self._save_state(state)

    def status(self) -> dict[str, Any]:
        """Which daemons run, and whether the nodes are idle; ``{"running": False}`` when not started."""
        state = self._load_state()
        daemons = self._daemons(state)
        if state is None or not daemons:
            return {"running": False, "state_dir": str(self.state_dir)}
        layout = self._layout(state)
        alive = {d.name: d.is_running() for d in daemons}
        healthy = all(alive.values()) and self._nodes_idle(layout)
        return {
            "running": all(alive.values()),
            "healthy": healthy,
            "daemons": alive,
            "settings": self._settings(state).as_dict(),
        }

    def settings(self) -> ClusterSettings:
        """Settings of the running cluster (raises ClusterError if it was never started)."""
        return self._settings(self._require_state())

    def _require_state(self) -> dict[str, Any]:
        state = self._load_state()
        if state is None or not state.get("daemons"):
            raise ClusterError(f"The local cluster in {self.state_dir} is not running; start it with `up`.")
        return state

    def _settings(self, state: dict[str, Any]) -> ClusterSettings:
        layout = self._layout(state)
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
        state = self._load_state()
        if state is None:
            return ""
        layout = self._layout(state)
        return "".join(log_tail(layout.log_dir / name) for name in ("slurmctld.log", "slurmd-node1.log"))
