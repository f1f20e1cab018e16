"""Security by default on the real cluster: private remote files, and host keys that are checked."""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import ConnectError, JobSpec, SlurmSession
from slurmbatch.testing import ClusterSettings

from .conftest import session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: Any, b: Any) -> Any:
    return a + b


def size(data: bytes) -> int:
    return len(data)


def loose_entries(root: Path, owner: int) -> list[str]:
    """Everything under ``root`` (itself included) that is not owned by ``owner`` or that others may use."""
    found: list[str] = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if info.st_uid != owner or info.st_mode & 0o077:
            found.append(f"{path} mode {stat.filemode(info.st_mode)} uid {info.st_uid}")
    return found


async def test_remote_work_directory_and_job_files_are_private(slurm_cluster: ClusterSettings) -> None:
    workdir = Path(f"{slurm_cluster.remote_workdir}-private-{secrets.token_hex(3)}")
    owner = pwd.getpwnam(slurm_cluster.user)
    # A work directory left open to everyone (as an older tool or a careless mkdir might leave it).
    for path in (workdir, workdir / "jobs", workdir / "results", workdir / "fn"):
        path.mkdir(mode=0o755)
        path.chmod(0o755)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    options = session_options(slurm_cluster, remote_workdir=str(workdir), cleanup=False)
    try:
        async with SlurmSession("127.0.0.1", **options) as session:
            single = await session.submit(add, (1, 2))
            array = await session.map(add, [1, 2, 3], [4, 5, 6])
            large = await session.submit(size, (b"x" * 300_000,))  # uploaded on its own, content-addressed
            ranks = await session.submit(
                add, (2, 2), JobSpec(use_srun=True, options={"ntasks": 2}, coalesce=False)
            )
            failing = await session.submit(add, (1, "a"))
            assert await single == 3
            assert [await future for future in array] == [5, 7, 9]
            assert await large == 300_000
            assert await ranks == 4
            with pytest.raises(TypeError):
                await failing
        # A result is collected (and removed) as soon as it appears; a detached job's stays for a look.
        async with SlurmSession("127.0.0.1", **options) as session:
            detached = await session.submit(add, (5, 5), JobSpec(setup=["sleep 1"]))
            session.detach()
        result = workdir / "results" / f"{detached.token}.pkl"
        for _ in range(300):
            if result.exists():
                break
            await anyio.sleep(0.2)
        names = {path.name for path in workdir.rglob("*")}
        # Every kind of file was made: the runner, functions, arguments, scripts, logs and results.
        assert any(name.startswith("runner-") for name in names)
        for suffix in (".args.pkl", ".sh", ".out", ".err", ".ranks"):
            assert any(name.endswith(suffix) for name in names), f"no {suffix} file in {sorted(names)}"
        assert len(list((workdir / "fn").glob("*.pkl"))) >= 3
        assert loose_entries(workdir, owner.pw_uid) == []
    finally:
        subprocess.run(["rm", "-rf", "--", str(workdir)], check=False)


async def test_host_keys_are_verified_by_default(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    """A server whose key is not the one on record is refused, with no opt-in needed."""
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    algorithm, key = Path(f"{impostor}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{slurm_cluster.port} {algorithm} {key}\n")
    options = session_options(slurm_cluster, known_hosts=str(known_hosts))
    del options["ssh_config"]  # the defaults, except where the known hosts are kept
    with pytest.raises(ConnectError, match="does not match the one") as caught:
        async with SlurmSession("127.0.0.1", **options):
            pass
    message = str(caught.value)
    assert "someone is intercepting the connection" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{slurm_cluster.port}' -f {known_hosts}" in message
