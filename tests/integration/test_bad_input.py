"""Bad input gets a typed error in plain words, before anything is submitted where possible."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import (
    ConnectError,
    JobFailed,
    JobSpec,
    PayloadError,
    RemoteEnvironmentError,
    SessionClosedError,
    SlurmSession,
    SubmissionError,
)
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark

from .conftest import login_shell, session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: int, b: int) -> int:
    return a + b


def job_count(cluster: ClusterSettings) -> int:
    return len(login_shell(cluster, "squeue -h -t all -o %i").split())


async def test_unpicklable_function_is_refused_before_submission(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any]
) -> None:
    lock = threading.Lock()

    def guarded() -> int:
        with lock:
            return 1

    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        before = job_count(slurm_cluster)
        with pytest.raises(PayloadError, match=r"guarded.*lock") as caught:
            await session.submit(guarded)
        assert "Create that object inside the function" in str(caught.value)
        with pytest.raises(PayloadError, match=r"args\[1\]"):
            await session.submit(add, (1, threading.Lock()))
        assert job_count(slurm_cluster) == before
        # The session is still usable.
        assert await (await session.submit(add, (1, 2))) == 3


async def test_unknown_sbatch_option_carries_sbatchs_message_and_spares_neighbours(
    session_kwargs: dict[str, Any],
) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        bad = JobSpec(options={"no-such-option": 3})
        outcomes: dict[str, Any] = {}

        async def submit(name: str, spec: JobSpec | None) -> None:
            try:
                outcomes[name] = await (await session.submit(add, (2, 2), spec))
            except SubmissionError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "bad", bad)
            tg.start_soon(submit, "good", None)
        assert outcomes["good"] == 4
        assert isinstance(outcomes["bad"], SubmissionError)
        assert "unrecognized option '--no-such-option=3'" in str(outcomes["bad"])
        with pytest.raises(SubmissionError, match="invalid partition specified: nowhere"):
            await session.submit(add, (1, 1), JobSpec(options={"partition": "nowhere"}))


async def test_jobspec_values_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(TypeError, match="options"):
        JobSpec(options={"time": {"minutes": 10}})  # type: ignore[dict-item]
    with pytest.raises((TypeError, ValueError), match="prerun_commands"):
        JobSpec(prerun_commands="module load x")


async def test_map_over_iterables_of_different_lengths(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        with pytest.raises(ValueError, match=r"different lengths \(3, 2\)"):
            await session.map(add, [1, 2, 3], [1, 2])


async def test_closed_session_refuses_work(session_kwargs: dict[str, Any]) -> None:
    session = SlurmSession("127.0.0.1", **session_kwargs)
    with pytest.raises(SessionClosedError, match="not open yet"):
        await session.submit(add, (1, 2))
    async with session:
        pass
    with pytest.raises(SessionClosedError, match="closed"):
        await session.submit(add, (1, 2))


async def test_unreachable_port(slurm_cluster: ClusterSettings) -> None:
    options = session_options(slurm_cluster, port=1)
    with pytest.raises(ConnectError, match=r"127\.0\.0\.1:1\b") as caught:
        async with SlurmSession("127.0.0.1", **options):
            pass
    assert caught.value.host == "127.0.0.1"


async def test_refused_key(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(ConnectError, match="slurmbatch") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, key_file=str(other))):
            pass
    assert str(other) in str(caught.value)


async def test_changed_host_key_is_refused(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    algorithm, key = Path(f"{impostor}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{slurm_cluster.port} {algorithm} {key}\n")
    with pytest.raises(ConnectError, match=r"host key") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, known_hosts=str(known_hosts))):
            pass
    assert str(known_hosts) in str(caught.value)
    # The explicit opt-out connects anyway.
    options = session_options(slurm_cluster, known_hosts=str(known_hosts), verify_host_key=False)
    async with SlurmSession("127.0.0.1", **options) as session:
        assert await (await session.submit(add, (1, 2))) == 3


async def test_missing_remote_python(slurm_cluster: ClusterSettings) -> None:
    mark = SshdLogMark.now(slurm_cluster.sshd_log)
    with pytest.raises(RemoteEnvironmentError, match=r"python3\.99") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, python="python3.99")):
            pass
    assert "Pass python=" in str(caught.value)
    assert mark.logins() == 1


async def test_other_python_minor_version_names_both(slurm_cluster: ClusterSettings) -> None:
    fake = f"{slurm_cluster.remote_workdir}-fakepython"
    login_shell(slurm_cluster, f"printf '#!/bin/sh\\necho 3.9\\necho 3.1.3\\n' > {fake} && chmod +x {fake}")
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(RemoteEnvironmentError, match=rf"is 3\.9, but this client runs Python {local}"):
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, python=fake)):
            pass


async def test_old_cloudpickle_on_the_remote_side_names_both(slurm_cluster: ClusterSettings) -> None:
    fake = f"{slurm_cluster.remote_workdir}-oldcloudpickle"
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    login_shell(
        slurm_cluster, f"printf '#!/bin/sh\\necho {local}\\necho 2.2.1\\n' > {fake} && chmod +x {fake}"
    )
    with pytest.raises(RemoteEnvironmentError, match=r"cloudpickle 2\.2\.1, but this client has 3\."):
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, python=fake)):
            pass


async def test_python_missing_only_on_compute_nodes_fails_the_job_plainly(
    slurm_cluster: ClusterSettings,
) -> None:
    options = session_options(slurm_cluster, python="python3.99", check_remote_python=False)
    async with SlurmSession("127.0.0.1", **options) as session:
        with pytest.raises(JobFailed, match="without writing a result") as caught:
            await (await session.submit(add, (1, 2)))
    assert "python3.99" in caught.value.stderr_tail


async def test_remote_workdir_that_cannot_be_written(slurm_cluster: ClusterSettings) -> None:
    with pytest.raises(RemoteEnvironmentError, match=r"/proc/forbidden.*Pass remote_workdir="):
        async with SlurmSession(
            "127.0.0.1", **session_options(slurm_cluster, remote_workdir="/proc/forbidden")
        ):
            pass
