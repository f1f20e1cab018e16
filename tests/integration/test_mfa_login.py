"""Logging in to a multi-factor login node: the job user's key, then a real TOTP code through PAM.

The node is `LocalCluster.start_mfa_login_node`: sshd with libpam-google-authenticator. Its secret file
allows a code to be used more than once within its 30 s window (no DISALLOW_REUSE), so that a second
connection and a reconnect a moment later log in whatever the clock says.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import (
    ConnectError,
    JobCancelled,
    JobSpec,
    KbdintHandler,
    SlurmExecutor,
    SlurmSession,
    totp,
    totp_answers,
)
from slurmbatch.testing import ClusterSettings, LocalCluster, MfaLoginNode

from .conftest import session_options

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


def mfa_options(cluster: ClusterSettings, node: MfaLoginNode, **overrides: Any) -> dict[str, Any]:
    return session_options(cluster, port=node.port, **overrides)


def kbdint_logins(node: MfaLoginNode) -> int:
    """Logins the MFA sshd accepted with a one-time code, since it started."""
    return Path(node.sshd_log).read_text(errors="replace").count("Accepted keyboard-interactive/pam")


class CountingTotp:
    """An async kbdint handler giving real codes, that counts its calls and how many ran at once."""

    def __init__(self, secret: str) -> None:
        self._answer = totp_answers(secret)
        self.calls = 0
        self.prompts: list[str] = []
        self._running = 0
        self.most_at_once = 0

    async def __call__(self, name: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        self.calls += 1
        self._running += 1
        self.most_at_once = max(self.most_at_once, self._running)
        try:
            await anyio.sleep(0.2)  # a slow token: a second login asking meanwhile would overlap
            self.prompts += [text for text, _ in prompts]
            return list(self._answer(name, instructions, prompts))  # type: ignore[arg-type]
        finally:
            self._running -= 1


@both_backends
@pytest.mark.anyio
async def test_totp_login_survives_dropped_connections_and_submits_maps_cancels(
    anyio_backend: str, slurm_cluster: ClusterSettings, local_cluster: LocalCluster, mfa_node: MfaLoginNode
) -> None:
    handler = CountingTotp(mfa_node.totp_secret)
    before = kbdint_logins(mfa_node)
    # One channel per connection: the result watcher holds one, so a second connection logs in too.
    options = mfa_options(slurm_cluster, mfa_node, kbdint=handler, max_connections=2, max_channels=1)
    async with SlurmSession("127.0.0.1", **options) as session:
        assert await (await session.submit(square, (7,))) == 49
        futures = await session.map(square, range(6))
        assert [await f for f in futures] == [x * x for x in range(6)]
        asked_before_drop = handler.calls
        assert asked_before_drop == session._pool.stats.connections_opened >= 2
        assert local_cluster.drop_ssh_connections(mfa_node.port) >= 1
        assert await (await session.submit(square, (9,))) == 81  # a new login, with a new code
        assert handler.calls > asked_before_drop
        slow = await session.submit(sleep_long, (), JobSpec(options={"time": "00:10:00"}))
        assert await slow.cancel()
        with pytest.raises(JobCancelled):
            await slow
    assert handler.most_at_once == 1  # logins one after the other, never two prompts at once
    assert all("verification code" in text.lower() for text in handler.prompts), handler.prompts
    assert kbdint_logins(mfa_node) - before == handler.calls  # every answer was a real, accepted code


@both_backends
@pytest.mark.anyio
async def test_wrong_code_or_failing_handler_is_a_plain_connect_error(
    anyio_backend: str, slurm_cluster: ClusterSettings, mfa_node: MfaLoginNode
) -> None:
    now = time.time()
    valid = {totp(mfa_node.totp_secret, at=now + step * 30) for step in (-1, 0, 1, 2)}
    wrong = next(code for code in ("000000", "111111", "222222") if code not in valid)

    def wrong_code(name: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        return [wrong for _ in prompts]

    with pytest.raises(ConnectError, match="refused the answers the kbdint handler gave"):
        async with SlurmSession("127.0.0.1", **mfa_options(slurm_cluster, mfa_node, kbdint=wrong_code)):
            pass

    def no_token(name: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        raise LookupError("no token plugged in")

    with pytest.raises(ConnectError, match="kbdint handler raised LookupError: no token plugged in"):
        async with SlurmSession("127.0.0.1", **mfa_options(slurm_cluster, mfa_node, kbdint=no_token)):
            pass

    with pytest.raises(ConnectError, match=r"refused to log in.*one-time code.*kbdint="):
        async with SlurmSession("127.0.0.1", **mfa_options(slurm_cluster, mfa_node)):
            pass


def test_executor_logs_in_with_totp(slurm_cluster: ClusterSettings, mfa_node: MfaLoginNode) -> None:
    handler: KbdintHandler = totp_answers(mfa_node.totp_secret)
    with SlurmExecutor("127.0.0.1", **mfa_options(slurm_cluster, mfa_node, kbdint=handler)) as executor:
        assert executor.submit(square, 5).result(timeout=60) == 25
        assert list(executor.map(square, range(4), timeout=60)) == [0, 1, 4, 9]
