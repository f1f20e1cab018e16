"""Sessions over the user's own OpenSSH ControlMaster (transport="openssh"), to the MFA login node.

The master is started by the system ``ssh`` (key, then a real one-time code through SSH_ASKPASS), as a
user's terminal login leaves one; the session gets an ssh config naming its ControlPath and no key, so
the master is its only way in.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch import ConnectError, JobCancelled, JobSpec, SlurmExecutor, SlurmSession
from slurmbatch.testing import ClusterSettings, ControlMaster, LocalCluster, MfaLoginNode
from slurmbatch.transport import OpenSSHTransport

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.cluster
both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def square(x: int) -> int:
    return x * x


def sleep_long() -> None:
    time.sleep(300)


@pytest.fixture(scope="module")
def mfa_node(local_cluster: LocalCluster) -> MfaLoginNode:
    return local_cluster.start_mfa_login_node()


@pytest.fixture
def master(mfa_node: MfaLoginNode, slurm_cluster: ClusterSettings) -> Iterator[ControlMaster]:
    started = mfa_node.start_control_master(slurm_cluster.known_hosts)
    yield started
    started.stop()


def logins(node: MfaLoginNode) -> int:
    return Path(node.sshd_log).read_text(errors="replace").count("Accepted keyboard-interactive/pam")


def over_master(cluster: ClusterSettings, master: ControlMaster, **overrides: Any) -> dict[str, Any]:
    """Session options with no key, no kbdint and no known_hosts: only the master's ssh config."""
    options: dict[str, Any] = {
        "ssh_config": master.client_config,
        "remote_workdir": cluster.remote_workdir,
        "python": cluster.python,
        "status_interval": (0.5, 2.0),
    }
    options.update(overrides)
    return options


@both_backends
@pytest.mark.anyio
async def test_session_over_a_live_master_then_a_plain_error_once_it_is_gone(
    anyio_backend: str, slurm_cluster: ClusterSettings, mfa_node: MfaLoginNode, master: ControlMaster
) -> None:
    before = logins(mfa_node)
    options = over_master(slurm_cluster, master, reconnect_deadline=2.0, max_channels=4)
    async with SlurmSession(master.alias, **options) as session:  # transport "auto" finds the master
        assert isinstance(session._pool, OpenSSHTransport)
        assert await (await session.submit(square, (6,))) == 36
        futures = await session.map(square, range(5))
        assert [await f for f in futures] == [0, 1, 4, 9, 16]
        slow = await session.submit(sleep_long, (), JobSpec(options={"time": "00:10:00"}))
        assert await slow.cancel()
        with pytest.raises(JobCancelled):
            await slow
        assert session._pool.stats.channels_in_use_peak <= 4
        assert logins(mfa_node) == before  # no login of the session's own: all over the master
        master.stop()
        with pytest.raises(
            ConnectError,
            match=r"ControlMaster for slurmbatch-over-master is not running.*Run `ssh slurmbatch-over-master` in a terminal",
        ):
            await session.submit(square, (2,))


@both_backends
@pytest.mark.anyio
async def test_openssh_transport_without_a_master_says_to_log_in(
    anyio_backend: str, slurm_cluster: ClusterSettings, mfa_node: MfaLoginNode, master: ControlMaster
) -> None:
    master.stop()
    options = over_master(slurm_cluster, master, transport="openssh")
    with pytest.raises(
        ConnectError, match="needs a running OpenSSH ControlMaster for slurmbatch-over-master"
    ):
        async with SlurmSession(master.alias, **options):
            pass


def test_executor_over_a_master(
    slurm_cluster: ClusterSettings, mfa_node: MfaLoginNode, master: ControlMaster
) -> None:
    options = over_master(slurm_cluster, master, transport="openssh")
    with SlurmExecutor(master.alias, **options) as executor:
        assert executor.submit(square, 4).result(timeout=60) == 16
        assert list(executor.map(square, range(3), timeout=60)) == [0, 1, 4]
