"""The login side of the local cluster: its sshds, login users, and jump hosts in front of it.

The main sshd lets in the job user only, with ``internal-sftp``, as the cluster always had. Extra sshds
(`SshdVariant`) run on other ports of the same machine and share its host key, Slurm and job-side Python:
other limits, a pre-auth banner, Debian's external ``sftp-server`` or no SFTP at all, no TCP forwarding
(a jump host that refuses ProxyJump), and the cluster's login users. All of them are daemons of the
cluster: ``down()`` stops them.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from . import _install, _login_users
from ._cluster_settings import ClusterSettings
from ._layout import ClusterLayout, free_ports
from ._processes import ClusterError, Daemon, children_of, kill_all, succeeds, wait_until
from ._ssh_configs import JumpClientConfig, SshdVariant, jump_client_config, ssh_client_config, sshd_config
from ._state import StateFile, daemons_of

__all__ = ["SSH_ALIAS", "JumpHosts", "LoginNodes"]

SSH_ALIAS = "slurmbatch-local"


@attrs.frozen
class JumpHosts:
    """A login node reached through jump hosts, and the ssh client config that describes the ways.

    ``ssh -F ssh_config <alias>`` (or ``SlurmSession(alias, ssh_config=ssh_config, ...)``) reaches the
    login node through each alias of ``routes``:

    - ``login``: directly (for comparison);
    - ``login-via-alias``: ``ProxyJump jump``;
    - ``login-via-user-host``: ``ProxyJump user@127.0.0.1:<jump port>``;
    - ``login-via-chain``: ``ProxyJump jump,jump2`` (``jump2`` reached through ``jump``);
    - ``login-via-proxy-command``: ``ProxyCommand ssh -F ssh_config -W %h:%p jump``;
    - ``login-via-no-forwarding``: through ``jump-no-forwarding``, whose sshd has ``AllowTcpForwarding no``;
    - ``login-via-chain-no-forwarding``: ``ProxyJump jump-no-forwarding,jump2``;
    - ``login-via-down-jump``: through ``jump-down``, a port nothing listens on;
    - ``login-via-wrong-key-jump``: through ``jump-wrong-key``, which offers a key no sshd accepts.

    ``ports`` and ``sshd_logs`` are keyed by the sshds' aliases (``login``, ``jump``, ``jump2``,
    ``jump-no-forwarding``): each sshd has its own log, so logins can be counted on each (see
    `slurmbatch.testing.logins`).
    """

    ssh_config: str
    user: str
    ports: dict[str, int]
    sshd_logs: dict[str, str]

    routes: ClassVar[tuple[str, ...]] = (
        "login",
        "login-via-alias",
        "login-via-user-host",
        "login-via-chain",
        "login-via-proxy-command",
        "login-via-no-forwarding",
        "login-via-chain-no-forwarding",
        "login-via-down-jump",
        "login-via-wrong-key-jump",
    )


class LoginNodes:
    """Starts the cluster's sshds and manages its login users; state lives in the cluster's state file."""

    def __init__(self, store: StateFile, job_user: str) -> None:
        self.store = store
        self.job_user = job_user

    # ----------------------------------------------------------------------------------------- sshds
    def start(self, state: dict[str, Any], *, port: int, variant: SshdVariant) -> Daemon:
        """Write the config of an sshd on ``port``, start it and wait until the job user can log in."""
        layout = self.store.layout(state)
        # sshd's privilege-separation directory, on the host or in the cluster's root.
        run_sshd = Path("/run/sshd") if self.store.root is None else self.store.root.inside("/run/sshd")
        run_sshd.mkdir(mode=0o755, parents=True, exist_ok=True)
        banner = None
        if variant.banner is not None:
            banner = layout.sshd_banner(port)
            banner.write_text(variant.banner if variant.banner.endswith("\n") else variant.banner + "\n")
            banner.chmod(0o644)
        groups: list[str] = []
        if variant.login_users:
            _login_users.ensure_login_group(self.job_user)
            if self.store.root is not None:
                # The root's sshd checks AllowGroups against the root's /etc/group.
                self.store.root.add_host_group(_login_users.LOGIN_GROUP)
            groups = [_login_users.LOGIN_GROUP]
        config = layout.sshd_config(port)
        config.write_text(
            sshd_config(
                layout, variant, user=self.job_user, port=port, allow_groups=groups, banner_file=banner
            )
        )
        log = layout.sshd_log(port)
        daemon = self.store.launch(
            state, f"sshd-{port}", ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)]
        )
        ports = [layout.ports.sshd, *map(int, state["extra_sshd"]), port]
        _install.write_known_hosts(layout, sorted(set(ports)))
        wait_until(
            lambda: self.ssh_works(layout, port), timeout=30, what=f"sshd accepting logins on {port}", log=log
        )
        return daemon

    def start_extra(self, variant: SshdVariant) -> int:
        """Start one more sshd for the running cluster; return its port."""
        state = self.store.require()
        port = free_ports(1)[0]
        self.start(state, port=port, variant=variant)
        state["extra_sshd"][str(port)] = attrs.asdict(variant)
        self.store.save(state)
        return port

    def ssh_argv(self, layout: ClusterLayout, port: int | None = None) -> list[str]:
        """``ssh`` as the job user to the main sshd, or to the one on ``port``."""
        argv = ["ssh", "-F", str(layout.ssh_config)]
        if port is not None:
            argv += ["-p", str(port)]
        return [*argv, SSH_ALIAS]

    def ssh_works(self, layout: ClusterLayout, port: int | None = None) -> bool:
        """Whether the job user can log in and run a command."""
        return succeeds([*self.ssh_argv(layout, port), "true"], timeout=10)

    def drop_connections(self, port: int | None) -> int:
        """Kill the per-connection sshd processes of the sshd on ``port``; return how many."""
        state = self.store.require()
        name = f"sshd-{port or self.store.layout(state).ports.sshd}"
        listeners = [d for d in daemons_of(state) if d.name == name and d.is_running()]
        if not listeners:
            raise ClusterError(f"No running daemon named {name!r}; is the cluster up?")
        connections = children_of(listeners[0].pid)
        kill_all(connections)
        return len(connections)

    # ----------------------------------------------------------------------------------------- users
    def login_user(
        self,
        base: ClusterSettings,
        name: str,
        *,
        shell: str,
        dotfiles: Mapping[str, str],
        port: int | None,
    ) -> ClusterSettings:
        """Create or update login user ``name``; return how to reach the cluster as that user."""
        state = self.store.require()
        layout = self.store.layout(state)
        if port is None:
            port = self._login_sshd(state)
        elif not state["extra_sshd"].get(str(port), {}).get("login_users"):
            raise ClusterError(
                f"The sshd on port {port} does not let login users in: start it with "
                "start_sshd(..., login_users=True), or leave port out for the cluster's login sshd."
            )
        _login_users.ensure_login_group(self.job_user)
        user = _login_users.ensure_login_user(name, shell=shell, dotfiles=dotfiles, root=self.store.root)
        state = self.store.require()
        if name not in state.setdefault("login_users", []):
            state["login_users"].append(name)
            self.store.save(state)
        alias = f"slurmbatch-{name}"
        config = layout.login_ssh_config(name)
        config.write_text(ssh_client_config(layout, alias=alias, user=name, port=port))
        return attrs.evolve(
            base,
            port=port,
            user=name,
            remote_workdir=f"{user.pw_dir}/work-{layout.cluster_name}",
            ssh_config=str(config),
            ssh_alias=alias,
            sshd_log=str(layout.sshd_log(port)),
        )

    def _login_sshd(self, state: dict[str, Any]) -> int:
        """The port of the cluster's own sshd for login users, started on first use."""
        port = state.get("login_sshd")
        running = {d.name for d in daemons_of(state) if d.is_running()}
        if port is not None and f"sshd-{port}" in running:
            return int(port)
        port = self.start_extra(SshdVariant(login_users=True))
        state = self.store.require()
        state["login_sshd"] = port
        self.store.save(state)
        return port

    # ----------------------------------------------------------------------------------------- jumps
    def start_jump_hosts(self, user: str | None) -> JumpHosts:
        """Start a login sshd and three jump sshds; write the ssh client config of `JumpHosts`."""
        name = user or self.job_user
        if name != self.job_user and _group_members(_login_users.LOGIN_GROUP).isdisjoint({name}):
            raise ClusterError(f"{name!r} is not a login user of this cluster: create it with login_user().")
        state = self.store.require()
        layout = self.store.layout(state)
        _install.ensure_key(layout.unauthorized_key)
        ports = {
            "login": self.start_extra(SshdVariant(login_users=True)),
            "jump": self.start_extra(SshdVariant(login_users=True)),
            "jump2": self.start_extra(SshdVariant(login_users=True)),
            "jump-no-forwarding": self.start_extra(SshdVariant(login_users=True, tcp_forwarding=False)),
        }
        described = JumpClientConfig(
            user=name,
            login=ports["login"],
            jump=ports["jump"],
            second_jump=ports["jump2"],
            no_forwarding_jump=ports["jump-no-forwarding"],
            down_port=free_ports(1)[0],
            unauthorized_key=layout.unauthorized_key,
        )
        config = layout.jump_ssh_config(ports["login"])
        config.write_text(jump_client_config(layout, described, config_file=config))
        return JumpHosts(
            ssh_config=str(config),
            user=name,
            ports=ports,
            sshd_logs={alias: str(layout.sshd_log(port)) for alias, port in ports.items()},
        )


def _group_members(name: str) -> set[str]:
    """Users in group ``name``: listed members and those whose primary group it is."""
    try:
        group = grp.getgrnam(name)
    except KeyError:
        return set()
    return set(group.gr_mem) | {user.pw_name for user in pwd.getpwall() if user.pw_gid == group.gr_gid}
