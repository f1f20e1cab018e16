"""Where the SSH contenders connect at each round-trip time: the sshd itself at 0, a latency proxy else.

A proxy listens on a port of its own, so each RTT gets the files a client needs to reach it as it
reaches the sshd: a known_hosts naming the proxy's port with the sshd's host key (the same server,
seen through another port), an ssh_config whose alias points at the proxy (for ``ssh -F``), and a home
whose ``~/.ssh/config`` gives the proxy's port (covalent-slurm-plugin passes no port of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs

from slurmbatch.testing import ClusterSettings

from .latency_proxy import LatencyProxy


@attrs.frozen
class Endpoint:
    rtt_ms: int
    host: str
    port: int
    known_hosts: str
    ssh_config: str
    ssh_alias: str
    csp_home: Path  # the HOME of covalent-slurm-plugin's process


def parse_rtts(text: str) -> list[int]:
    """``"0,50"`` → ``[0, 50]`` (milliseconds, each once, in the order given)."""
    rtts: list[int] = []
    for part in text.split(","):
        value = int(part.strip())
        if value < 0:
            raise ValueError(f"an RTT cannot be negative: {value} ms")
        if value not in rtts:
            rtts.append(value)
    return rtts


def csp_home(root: Path, host: str, port: int) -> Path:
    """A home whose ``~/.ssh/config`` sends ``host`` to ``port``."""
    (root / ".ssh").mkdir(parents=True, exist_ok=True)
    (root / ".ssh" / "config").write_text(f"Host {host}\n    Port {port}\n")
    return root


def direct(cluster: ClusterSettings, home: Path) -> Endpoint:
    return Endpoint(
        0, cluster.host, cluster.port, cluster.known_hosts, cluster.ssh_config, cluster.ssh_alias, home
    )


def through(cluster: ClusterSettings, rtt_ms: int, port: int, files: Path) -> Endpoint:
    """The endpoint of a proxy on ``port`` in front of ``cluster``'s sshd; its files under ``files``."""
    files.mkdir(parents=True, exist_ok=True)
    own = f"[{cluster.host}]:{cluster.port} "
    keys = [
        line[len(own) :]
        for line in Path(cluster.known_hosts).read_text().splitlines()
        if line.startswith(own)
    ]
    known_hosts = files / "known_hosts"
    known_hosts.write_text("".join(f"[{cluster.host}]:{port} {key}\n" for key in keys))
    config = []
    for line in Path(cluster.ssh_config).read_text().splitlines():
        option = line.strip().split(" ", 1)[0].lower()
        if option == "port":
            line = f"    Port {port}"
        elif option == "userknownhostsfile":
            line = f"    UserKnownHostsFile {known_hosts}"
        config.append(line)
    ssh_config = files / "ssh_config"
    ssh_config.write_text("\n".join(config) + "\n")
    home = csp_home(files / "csp-home", cluster.host, port)
    return Endpoint(rtt_ms, cluster.host, port, str(known_hosts), str(ssh_config), cluster.ssh_alias, home)


@contextmanager
def endpoints(cluster: ClusterSettings, rtts_ms: list[int], scratch: Path) -> Iterator[dict[int, Endpoint]]:
    """One endpoint per RTT, its proxy serving while the block runs."""
    with ExitStack() as stack:
        found: dict[int, Endpoint] = {}
        for rtt in rtts_ms:
            if rtt == 0:
                found[rtt] = direct(cluster, csp_home(scratch / "csp-home", cluster.host, cluster.port))
                continue
            proxy = stack.enter_context(LatencyProxy(cluster.host, cluster.port, rtt / 1000).running())
            found[rtt] = through(cluster, rtt, proxy.port, scratch / f"rtt-{rtt}")
        yield found
