"""The Slurm side of the local cluster: munged, MariaDB + slurmdbd (optional), slurmctld, slurmd."""

from __future__ import annotations

import os
import secrets
import subprocess
from typing import Any

from ._configs import MARIADB_PASSWORD, MARIADB_USER
from ._layout import ClusterLayout
from ._processes import run, succeeds, wait_until
from ._state import StateFile

__all__ = ["nodes_idle", "register_accounting_user", "start_accounting", "start_munge", "start_slurm"]


def start_munge(store: StateFile, state: dict[str, Any]) -> None:
    """Start munged as the munge user, with its key and socket in the state directory."""
    layout = store.layout(state)
    uid, gid = store.ids("munge")
    for sub, mode in (("", 0o755), ("etc", 0o700), ("run", 0o755), ("log", 0o700), ("lib", 0o700)):
        path = layout.munge_dir / sub
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        path.chmod(mode)
        os.chown(path, uid, gid)
    if not layout.munge_key.exists():
        layout.munge_key.write_bytes(secrets.token_bytes(1024))
    layout.munge_key.chmod(0o400)
    os.chown(layout.munge_key, uid, gid)
    log = layout.munge_dir / "log" / "munged.log"
    store.launch(
        state,
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
            and succeeds(store.command(["munge", "-n", "-S", str(layout.munge_socket)]), timeout=5)
        ),
        timeout=30,
        what="munged answering on its socket",
        log=layout.log_dir / "munged.out",
    )


def start_accounting(store: StateFile, state: dict[str, Any], *, user: str) -> None:
    """Start MariaDB and slurmdbd, register the cluster and ``user`` (so sacct has durable records)."""
    layout = store.layout(state)
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
    store.launch(
        state,
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
    store.launch(state, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
    wait_until(
        lambda: succeeds(["sacctmgr", "-n", "list", "cluster"], env=store.env(layout), timeout=10),
        timeout=60,
        what="slurmdbd answering sacctmgr",
        log=layout.log_dir / "slurmdbd.log",
    )
    # The cluster must be registered before slurmctld starts, or accounting stays off until it is.
    listed = run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=store.env(layout))
    if layout.cluster_name not in listed.split():
        run(["sacctmgr", "-i", "add", "cluster", layout.cluster_name], env=store.env(layout))
    register_accounting_user(store, layout, user)


def register_accounting_user(store: StateFile, layout: ClusterLayout, user: str) -> None:
    """Give ``user`` an association in slurmdbd (account ``local``), or sbatch refuses its jobs."""
    env = store.env(layout)
    accounts = run(["sacctmgr", "-n", "-P", "list", "user", "format=user"], env=env)
    if user in accounts.split():
        return
    listed = run(["sacctmgr", "-n", "-P", "list", "account", "format=account"], env=env)
    if "local" not in listed.split():
        run(["sacctmgr", "-i", "add", "account", "local", f"cluster={layout.cluster_name}"], env=env)
    run(
        ["sacctmgr", "-i", "add", "user", user, "account=local", f"cluster={layout.cluster_name}"],
        env=env,
    )


def start_slurm(store: StateFile, state: dict[str, Any]) -> None:
    """Start slurmctld and one slurmd per simulated node; return when every node is idle."""
    layout = store.layout(state)
    env = store.env(layout)
    conf = str(layout.slurm_conf)
    store.launch(state, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", conf])
    wait_until(
        lambda: succeeds(store.command(["scontrol", "ping"]), env=env, timeout=5),
        timeout=60,
        what="slurmctld answering `scontrol ping`",
        log=layout.log_dir / "slurmctld.log",
    )
    for node in layout.node_names:
        (store.state_dir / "slurmd" / node).mkdir(mode=0o755, parents=True, exist_ok=True)
        store.launch(state, f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node, "-f", conf])
    wait_until(
        lambda: nodes_idle(store, layout),
        timeout=90,
        what=f"all {len(layout.node_names)} nodes idle in sinfo",
        log=layout.log_dir / "slurmctld.log",
    )


def nodes_idle(store: StateFile, layout: ClusterLayout) -> bool:
    """Whether sinfo reports every simulated node usable."""
    try:
        out = subprocess.run(
            store.command(["sinfo", "-h", "-N", "-o", "%N %t"]),
            capture_output=True,
            text=True,
            env=store.env(layout),
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    return out.returncode == 0 and all(states.get(n) in ("idle", "mix", "alloc") for n in layout.node_names)
