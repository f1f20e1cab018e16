"""The SDK's core on login nodes as real sites run them: a tcsh login shell with a site notice, a
``~/.bashrc`` that prints on every command (under Debian's external sftp-server, which it garbles), and
an sshd without SFTP. Every remote script must run under /bin/sh, never the login shell, and files must
reach the cluster whether or not SFTP works.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import JobCancelled, SlurmSession
from slurmbatch.testing import (
    BASHRC_GREETING,
    NOISY_BASHRC,
    SITE_NOTICE_CSHRC,
    ClusterSettings,
    LocalCluster,
)

from .conftest import session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SiteError(Exception):
    """An exception type of the user's own: it must come back as itself."""


def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


def fail(message: str) -> None:
    raise SiteError(message)


def sleep_long() -> None:
    time.sleep(300)


@pytest.fixture(scope="module")
def login_users(local_cluster: LocalCluster) -> Iterator[dict[str, ClusterSettings]]:
    """Users of each kind, each on the sshd a site like theirs runs."""
    external = local_cluster.start_sshd(sftp="external", login_users=True)
    no_sftp = local_cluster.start_sshd(sftp="none", login_users=True)
    yield {
        "tcsh": local_cluster.login_user(
            "sbtcsh", shell="/usr/bin/tcsh", dotfiles=SITE_NOTICE_CSHRC, port=external
        ),
        "printing-bashrc": local_cluster.login_user("sbnoisy", dotfiles=NOISY_BASHRC, port=external),
        "no-sftp": local_cluster.login_user("sbplain", port=no_sftp),
    }


def options(user: ClusterSettings, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return session_options(user, journal=tmp_path / "journal.sqlite3", **overrides)


@pytest.mark.parametrize("kind", ["tcsh", "printing-bashrc", "no-sftp"])
async def test_submit_exception_map_stdout_and_cancel(
    login_users: dict[str, ClusterSettings], kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = login_users[kind]
    caplog.set_level(logging.WARNING, logger="slurmbatch")
    async with SlurmSession(user.host, **options(user, tmp_path)) as session:
        future = await session.submit(square, (7,))
        assert await future == 49
        assert "squaring 7" in await future.stdout()

        failing = await session.submit(fail, ("from the compute node",))
        with pytest.raises(SiteError, match="from the compute node") as raised:
            await failing
        assert "fail" in raised.value.remote_traceback  # type: ignore[attr-defined]

        futures = await session.map(square, range(12))
        assert [await f for f in futures] == [x * x for x in range(12)]

        running = await session.submit(sleep_long)
        await running.cancel()
        with pytest.raises(JobCancelled):
            await running
        sftp_note = session._pool.sftp_unavailable
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if kind == "tcsh":
        # A notice on stderr leaves SFTP alone: nothing to warn about.
        assert sftp_note is None
    elif kind == "printing-bashrc":
        assert sftp_note is not None and BASHRC_GREETING in sftp_note and "[ -t 1 ]" in sftp_note
        assert any("garbled" in w for w in warnings)
    else:
        assert sftp_note is not None and "no SFTP subsystem" in sftp_note


@pytest.mark.parametrize("kind", ["tcsh", "printing-bashrc"])
async def test_a_later_session_reattaches_and_collects(
    login_users: dict[str, ClusterSettings], kind: str, tmp_path: Path
) -> None:
    user = login_users[kind]
    async with SlurmSession(user.host, **options(user, tmp_path)) as first:
        futures = await first.map(square, range(3))
        first.detach()
        first_id = first.id
    async with SlurmSession(user.host, **options(user, tmp_path)) as second:
        collected = await second.reattach(first_id)
        assert sorted([await f for f in collected]) == [0, 1, 4]
    assert len(futures) == 3


async def test_the_probe_is_not_fooled_by_start_up_output(
    login_users: dict[str, ClusterSettings], tmp_path: Path
) -> None:
    # The printing .bashrc's line would have been the probe's first field, the work directory.
    user = login_users["printing-bashrc"]
    async with SlurmSession(user.host, **options(user, tmp_path)) as session:
        assert session._layout.workdir.startswith("/")
        assert BASHRC_GREETING not in session._layout.workdir
        assert BASHRC_GREETING in session._pool.startup_output


async def test_a_whole_session_runs_under_trio_and_asyncio_alike(
    login_users: dict[str, ClusterSettings], tmp_path: Path, anyio_backend: str
) -> None:
    user = login_users["tcsh"]
    async with SlurmSession(user.host, **options(user, tmp_path)) as session:
        results = []
        async with anyio.create_task_group() as group:

            async def one(x: int) -> None:
                results.append(await (await session.submit(square, (x,))))

            for x in range(5):
                group.start_soon(one, x)
    assert sorted(results) == [0, 1, 4, 9, 16], anyio_backend
