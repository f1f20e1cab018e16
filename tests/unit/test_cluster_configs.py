"""The local cluster's config files are rendered from its layout and options alone."""

from pathlib import Path

from slurmbatch.testing._configs import ClusterOptions, slurm_conf
from slurmbatch.testing._layout import ClusterLayout, ClusterPorts, free_ports
from slurmbatch.testing._ssh_configs import SshdVariant, ssh_client_config, sshd_config

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
