"""The local cluster's state file: its ports, options and the daemons it started, by pid."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from ._layout import ClusterLayout, ClusterPorts
from ._processes import ClusterError, Daemon, spawn
from ._root import Root

__all__ = ["MARKER", "StateFile"]

# Every daemon carries MARKER=<state dir> in its environment, so down() finds what escaped its pid list.
MARKER = "SLURMBATCH_LOCAL_CLUSTER"


@attrs.frozen
class StateFile:
    """``cluster.json`` in ``state_dir``: read and written whole, replaced atomically.

    ``root`` is the Debian root the cluster's daemons and Slurm commands run in, for a Slurm release other
    than the host's; None runs them on the host.
    """

    state_dir: Path
    root: Root | None = None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` (a Slurm or munge command) as it runs against this cluster: inside its root, if any."""
        return argv if self.root is None else self.root.argv(argv)

    def ids(self, name: str) -> tuple[int, int]:
        """uid and gid of ``name`` as the cluster's daemons see it (the root's own ids, if any)."""
        if self.root is not None:
            return self.root.ids(name)
        import pwd

        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid

    @property
    def path(self) -> Path:
        return self.state_dir / "cluster.json"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the cluster was never started here."""
        try:
            state: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tmp file + rename, so a reader never sees half of it)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.path)

    def require(self) -> dict[str, Any]:
        """The state of a running cluster; ClusterError when it is not running."""
        state = self.load()
        if state is None or not state.get("daemons"):
            raise ClusterError(f"The local cluster in {self.state_dir} is not running; start it with `up`.")
        return state

    def layout(self, state: dict[str, Any]) -> ClusterLayout:
        """The file layout and ports recorded in ``state``."""
        ports = state["ports"]
        return ClusterLayout(
            state_dir=self.state_dir,
            ports=ClusterPorts(**{**ports, "slurmd": tuple(ports["slurmd"])}),
            node_count=len(ports["slurmd"]),
        )

    def env(self, layout: ClusterLayout) -> dict[str, str]:
        """The environment daemons and Slurm commands run with."""
        return dict(os.environ, SLURM_CONF=str(layout.slurm_conf), **{MARKER: str(self.state_dir)})

    def launch(self, state: dict[str, Any], name: str, argv: list[str], *, user: str | None = None) -> Daemon:
        """Start a daemon and record it (and how it was started, for restarts) in the state file."""
        layout = self.layout(state)
        if self.root is None:
            daemon = spawn(name, argv, log=layout.log_dir / f"{name}.out", env=self.env(layout), user=user)
        else:
            uid, gid = self.root.ids(user) if user else (0, 0)
            started = spawn(
                name,
                self.root.argv(argv, user=f"{uid}:{gid}" if user else None),
                log=layout.log_dir / f"{name}.out",
                env=self.env(layout),
            )
            # chroot execs the daemon: the pid is the daemon's, its executable the root's copy.
            daemon = Daemon(name=name, pid=started.pid, exe=str(self.root.executable(argv[0])))
        state["daemons"].append(attrs.asdict(daemon))
        state["launch"][name] = {"argv": argv, "user": user}
        self.save(state)
        return daemon


def daemons_of(state: dict[str, Any] | None) -> list[Daemon]:
    """The daemons recorded in ``state`` (running or not)."""
    return [Daemon(**d) for d in (state or {}).get("daemons", [])]
