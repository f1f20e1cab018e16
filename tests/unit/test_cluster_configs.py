"""The local cluster's config files are rendered from its layout and options alone."""

from pathlib import Path

import pytest

from slurmbatch.testing._configs import ClusterOptions, slurm_conf
from slurmbatch.testing._layout import ClusterLayout, ClusterPorts, free_ports
from slurmbatch.testing._login_nodes import JumpHosts
from slurmbatch.testing._login_users import check_name
from slurmbatch.testing._ssh_configs import (
    JumpClientConfig,
    SshdVariant,
    jump_client_config,
    ssh_client_config,
    sshd_config,
)

LAYOUT = ClusterLayout(
    state_dir=Path("/state/cluster"),
    ports=ClusterPorts(slurmctld=7001, slurmdbd=7002, mariadb=7003, sshd=7004, slurmd=(7005, 7006, 7007)),
    node_count=3,
)


def lines(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("NodeName")
    )


def test_slurm_conf_has_one_node_line_per_simulated_node_with_distinct_ports() -> None:
    text = slurm_conf(LAYOUT, ClusterOptions(nodes=3, cpus_per_node=32), hostname="box")
    nodes = [line for line in text.splitlines() if line.startswith("NodeName=")]
    assert [line.split()[0] for line in nodes] == ["NodeName=node1", "NodeName=node2", "NodeName=node3"]
    assert ["Port=7005" in nodes[0], "Port=7006" in nodes[1], "Port=7007" in nodes[2]] == [True] * 3
    assert all("CPUs=32" in line and "NodeAddr=127.0.0.1" in line for line in nodes)
    conf = lines(text)
    assert conf["SlurmctldHost"] == "box(127.0.0.1)"
    assert conf["SlurmdParameters"] == "config_overrides"
    assert conf["ProctrackType"] == "proctrack/linuxproc"
    assert conf["AuthInfo"] == "socket=/state/cluster/munge/run/munge.socket"
    assert "batch_sched_delay=0" in conf["SchedulerParameters"]


def test_accounting_switches_between_none_and_slurmdbd() -> None:
    without = lines(slurm_conf(LAYOUT, ClusterOptions(), hostname="box"))
    assert without["AccountingStorageType"] == "accounting_storage/none"
    assert "AccountingStoragePort" not in without
    with_dbd = lines(slurm_conf(LAYOUT, ClusterOptions(slurmdbd=True), hostname="box"))
    assert with_dbd["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert with_dbd["AccountingStoragePort"] == "7002"
    # slurmdbd ignores AuthInfo: the munge socket must be named here too.
    assert with_dbd["AccountingStoragePass"] == "/state/cluster/munge/run/munge.socket"


def test_sshd_config_carries_limits_and_slurm_conf() -> None:
    text = sshd_config(LAYOUT, SshdVariant(max_sessions=3, max_startups="2:50:4"), user="u", port=2222)
    assert "MaxSessions 3" in text.splitlines()
    assert "MaxStartups 2:50:4" in text.splitlines()
    assert "ListenAddress 127.0.0.1" in text.splitlines()
    assert "PasswordAuthentication no" in text.splitlines()
    assert "SetEnv SLURM_CONF=/state/cluster/etc/slurm.conf" in text.splitlines()


def test_ssh_client_config_pins_key_and_known_hosts() -> None:
    text = ssh_client_config(LAYOUT, alias="a", user="u", port=2222)
    assert text.splitlines()[0] == "Host a"
    assert "    UserKnownHostsFile /state/cluster/ssh/known_hosts" in text.splitlines()
    assert "    StrictHostKeyChecking yes" in text.splitlines()


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_the_main_sshds_variant_renders_what_the_cluster_always_had() -> None:
    lines_ = sshd_config(LAYOUT, SshdVariant(), user="u", port=2222).splitlines()
    assert "AllowUsers u" in lines_
    assert "Subsystem sftp internal-sftp" in lines_
    assert not [line for line in lines_ if line.startswith(("Banner", "AllowTcpForwarding", "AllowGroups"))]


def test_sshd_variants_render_banner_sftp_forwarding_and_login_groups() -> None:
    text = sshd_config(
        LAYOUT,
        SshdVariant(sftp="external", tcp_forwarding=False, banner="hi", login_users=True),
        user="u",
        port=2222,
        allow_groups=["logins"],
        banner_file=Path("/state/cluster/ssh/banner-2222"),
    )
    lines_ = text.splitlines()
    assert "Subsystem sftp /usr/lib/openssh/sftp-server" in lines_
    assert "AllowTcpForwarding no" in lines_
    assert "Banner /state/cluster/ssh/banner-2222" in lines_
    # sshd demands both AllowUsers and AllowGroups when both are given: only the groups are named.
    assert "AllowGroups logins" in lines_
    assert not [line for line in lines_ if line.startswith("AllowUsers")]
    no_sftp = sshd_config(LAYOUT, SshdVariant(sftp="none"), user="u", port=2222)
    assert "Subsystem" not in no_sftp


def test_an_unknown_sftp_server_is_refused() -> None:
    with pytest.raises(ValueError, match="sftp"):
        SshdVariant(sftp="sftp-server")  # type: ignore[arg-type]


def blocks_of(text: str) -> dict[str, list[str]]:
    blocks = {}
    for block in text.strip().split("\n\n"):
        first, *rest = block.splitlines()
        blocks[first.removeprefix("Host ")] = [line.strip() for line in rest]
    return blocks


def test_the_jump_host_config_routes_each_alias_its_own_way() -> None:
    ports = JumpClientConfig(
        user="u",
        login=3000,
        jump=3001,
        second_jump=3002,
        no_forwarding_jump=3003,
        down_port=3004,
        unauthorized_key=Path("/state/cluster/ssh/other"),
    )
    config = Path("/state/cluster/ssh/ssh_config-jumps")
    blocks = blocks_of(jump_client_config(LAYOUT, ports, config_file=config))
    # The route comes first in its block: in ssh_config the first value of an option wins.
    assert blocks["login-via-alias"][0] == "ProxyJump jump"
    assert blocks["login-via-user-host"][0] == "ProxyJump u@127.0.0.1:3001"
    assert blocks["login-via-chain"][0] == "ProxyJump jump,jump2"
    assert blocks["login-via-proxy-command"][0] == f"ProxyCommand ssh -F {config} -W %h:%p jump"
    assert blocks["login-via-no-forwarding"][0] == "ProxyJump jump-no-forwarding"
    assert all("Port 3000" in blocks[alias] for alias in JumpHosts.routes)
    assert "Port 3004" in blocks["jump-down"]
    assert "IdentityFile /state/cluster/ssh/other" in blocks["jump-wrong-key"]
    assert "Port 3001" in blocks["jump-wrong-key"]
    # A hop written as user@host:port has no alias of its own: this block gives it the key.
    assert "IdentityFile /state/cluster/ssh/id_ed25519" in blocks["127.0.0.1"]


@pytest.mark.parametrize("name", ["Bad", "with space", "1abc", "", "a" * 33, "x/y"])
def test_login_user_names_useradd_would_refuse_are_refused_first(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid Unix user name"):
        check_name(name)


@pytest.mark.parametrize("name", ["sbtcsh", "_svc", "a-b_1"])
def test_good_login_user_names_pass(name: str) -> None:
    check_name(name)
