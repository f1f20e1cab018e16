"""Reaching the login node through jump hosts, as OpenSSH does: real jump sshds of the local cluster.

Every form the ssh config can take (ProxyJump through an alias, ``user@host:port``, a chain of two, and
ProxyCommand) carries a whole session: a job is submitted and its result read. Each sshd logs to its own
file, so the logins on the login node and on each jump host are counted against the pool's connections.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import SlurmSession
from slurmbatch._errors import ConnectError
from slurmbatch.testing import ClusterSettings, JumpHosts, LocalCluster
from slurmbatch.testing._processes import children_of
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.transport import ConnectSettings, SSHPool

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

# The job side has no tests package: functions of this module travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture(scope="module")
def jump_hosts(local_cluster: LocalCluster) -> JumpHosts:
    return local_cluster.start_jump_hosts()


def session_kwargs(cluster: ClusterSettings, jumps: JumpHosts, **overrides: Any) -> dict[str, Any]:
    """Everything about the connection comes from the generated ssh config: no host, port, user or key."""
    kwargs: dict[str, Any] = {
        "ssh_config": jumps.ssh_config,
        "remote_workdir": cluster.remote_workdir,
        "python": cluster.python,
        "status_interval": (0.5, 2.0),
        "journal": False,
    }
    kwargs.update(overrides)
    return kwargs


ROUTES = {
    # alias of the login node: the jump sshds its connections pass through
    "login-via-alias": ("jump",),
    "login-via-user-host": ("jump",),
    "login-via-chain": ("jump", "jump2"),
    "login-via-proxy-command": ("jump",),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_session_through_the_jump_hosts_runs_jobs(
    route: str, slurm_cluster: ClusterSettings, jump_hosts: JumpHosts
) -> None:
    sshds = ("login", *ROUTES[route])
    marks = {name: SshdLogMark.now(jump_hosts.sshd_logs[name]) for name in sshds}
    untouched = SshdLogMark.now(jump_hosts.sshd_logs["jump-no-forwarding"])
    async with SlurmSession(route, **session_kwargs(slurm_cluster, jump_hosts)) as session:
        futures = await session.map(add, range(8), range(8))
        assert [await future for future in futures] == [2 * i for i in range(8)]
        opened = session._pool.stats.connections_opened
    assert opened >= 1
    assert {name: mark.logins() for name, mark in marks.items()} == dict.fromkeys(sshds, opened)
    assert untouched.logins() == 0


async def test_every_pool_connection_goes_through_the_jump(
    slurm_cluster: ClusterSettings, jump_hosts: JumpHosts
) -> None:
    login = SshdLogMark.now(jump_hosts.sshd_logs["login"])
    jump = SshdLogMark.now(jump_hosts.sshd_logs["jump"])
    settings = ConnectSettings(host="login-via-alias", ssh_config=(jump_hosts.ssh_config,))
    async with SSHPool(settings, max_connections=3, max_channels=1) as pool:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(pool.run, "sleep 1")
        assert pool.stats.connections_opened == 3
    assert (login.logins(), jump.logins()) == (3, 3)


def open_connections(cluster: ClusterSettings, port: int) -> int:
    """How many connections the sshd on ``port`` serves now (one child process each)."""
    daemons = json.loads((Path(cluster.state_dir) / "cluster.json").read_text())["daemons"]
    (pid,) = [d["pid"] for d in daemons if d["name"] == f"sshd-{port}"]
    return len(children_of(pid))


async def test_a_lost_connection_is_replaced_through_the_jump_and_none_is_left_open(
    local_cluster: LocalCluster, slurm_cluster: ClusterSettings, jump_hosts: JumpHosts
) -> None:
    login = SshdLogMark.now(jump_hosts.sshd_logs["login"])
    jump = SshdLogMark.now(jump_hosts.sshd_logs["jump"])
    settings = ConnectSettings(host="login-via-alias", ssh_config=(jump_hosts.ssh_config,))
    async with SSHPool(settings, max_connections=1, reconnect_deadline=30) as pool:
        assert (await pool.run("echo one")).stdout == "one\n"
        dropped = await anyio.to_thread.run_sync(
            local_cluster.drop_ssh_connections, jump_hosts.ports["login"]
        )
        assert dropped == 1
        await anyio.sleep(0.5)  # let the client notice, as it would after a login node reboot
        assert (await pool.run("echo two")).stdout == "two\n"
        stats = pool.stats
    assert (stats.connections_opened, stats.connections_lost) == (2, 1)
    assert (login.logins(), jump.logins()) == (2, 2)
    # Closing (or losing) a connection closes its jump connection too.
    for _ in range(200):
        if open_connections(slurm_cluster, jump_hosts.ports["jump"]) == 0:
            break
        await anyio.sleep(0.1)
    assert open_connections(slurm_cluster, jump_hosts.ports["jump"]) == 0


async def test_the_login_nodes_key_and_known_hosts_serve_a_jump_host_without_its_own(
    slurm_cluster: ClusterSettings, jump_hosts: JumpHosts, tmp_path: Any
) -> None:
    # A config that only routes: the jump host's key and known_hosts come from the settings.
    config = tmp_path / "ssh_config"
    jump_port, login_port = jump_hosts.ports["jump"], jump_hosts.ports["login"]
    config.write_text(
        f"Host bare-jump\n    HostName 127.0.0.1\n    Port {jump_port}\n    User {jump_hosts.user}\n\n"
        f"Host bare-login\n    HostName 127.0.0.1\n    Port {login_port}\n    ProxyJump bare-jump\n"
    )
    settings = ConnectSettings(
        host="bare-login",
        user=jump_hosts.user,
        key_files=(slurm_cluster.key_file,),
        known_hosts=slurm_cluster.known_hosts,
        ssh_config=(str(config),),
    )
    async with SSHPool(settings) as pool:
        result = await pool.run("echo $SSH_CONNECTION")
    # The login node sees the connection coming from the jump host's forwarding, on its own port.
    assert result.stdout.split()[-1] == str(login_port)


async def pool_error(jumps: JumpHosts, alias: str) -> ConnectError:
    settings = ConnectSettings(host=alias, ssh_config=(jumps.ssh_config,), connect_timeout=20)
    with pytest.raises(ConnectError) as raised:
        async with SSHPool(settings) as pool:
            await pool.run("true")
    return raised.value


async def test_a_jump_host_refusing_forwarding_is_named(jump_hosts: JumpHosts) -> None:
    error = await pool_error(jump_hosts, "login-via-no-forwarding")
    message = str(error)
    assert f"jump host 127.0.0.1:{jump_hosts.ports['jump-no-forwarding']}" in message
    assert "'jump-no-forwarding'" in message
    assert "AllowTcpForwarding" in message
    assert f"127.0.0.1:{jump_hosts.ports['login']}" in message
    assert "resolve" not in message
    assert error.host == "login-via-no-forwarding"


async def test_the_first_hop_of_a_chain_refusing_forwarding_is_named(jump_hosts: JumpHosts) -> None:
    message = str(await pool_error(jump_hosts, "login-via-chain-no-forwarding"))
    refusing, next_hop = jump_hosts.ports["jump-no-forwarding"], jump_hosts.ports["jump2"]
    assert f"the jump host 127.0.0.1:{refusing} (ssh config alias 'jump-no-forwarding') refused" in message
    assert f"to forward the connection to 127.0.0.1:{next_hop}" in message


async def test_a_jump_host_that_is_down_is_named(jump_hosts: JumpHosts) -> None:
    message = str(await pool_error(jump_hosts, "login-via-down-jump"))
    assert "jump host" in message
    assert "'jump-down'" in message
    assert "refused" in message
    assert "resolve" not in message


async def test_a_jump_host_refusing_the_key_is_named(jump_hosts: JumpHosts) -> None:
    message = str(await pool_error(jump_hosts, "login-via-wrong-key-jump"))
    assert "jump host" in message
    assert "'jump-wrong-key'" in message
    assert "refused to log in" in message
    assert "id_ed25519_unauthorized" in message


async def test_a_failing_proxy_command_is_named(jump_hosts: JumpHosts, tmp_path: Any) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host via-broken-command\n    HostName 127.0.0.1\n    Port {jump_hosts.ports['login']}\n"
        "    ProxyCommand sh -c 'echo no route to the login node >&2; exit 3'\n"
    )
    settings = ConnectSettings(host="via-broken-command", ssh_config=(str(config),), connect_timeout=20)
    with pytest.raises(ConnectError) as raised:
        async with SSHPool(settings) as pool:
            await pool.run("true")
    assert "ProxyCommand" in str(raised.value)
    assert "MaxStartups" not in str(raised.value)
