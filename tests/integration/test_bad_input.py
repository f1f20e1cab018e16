"""Bad input gets a typed error in plain words, before anything is submitted where possible."""

from __future__ import annotations

import errno
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest

from slurmbatch import (
    ConnectError,
    JobCancelled,
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


# --------------------------------------------------------------------------------------------- reaching the host


async def test_host_name_that_does_not_resolve(slurm_cluster: ClusterSettings) -> None:
    with pytest.raises(
        ConnectError, match=r"'no-such-login\.invalid': it is not a host name DNS knows"
    ) as caught:
        async with SlurmSession("no-such-login.invalid", **session_options(slurm_cluster)):
            pass
    assert "Check the spelling" in str(caught.value)


async def test_unknown_ssh_config_alias(slurm_cluster: ClusterSettings) -> None:
    options = session_options(slurm_cluster, ssh_config=slurm_cluster.ssh_config, port=None, user=None)
    with pytest.raises(ConnectError, match="no `Host no-such-alias` entry") as caught:
        async with SlurmSession("no-such-alias", **options):
            pass
    assert slurm_cluster.ssh_config in str(caught.value)
    assert "add the alias to your ssh config" in str(caught.value)


async def test_user_the_server_does_not_accept(slurm_cluster: ClusterSettings) -> None:
    with pytest.raises(ConnectError, match="refused to log in user 'nobody-here'") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, user="nobody-here")):
            pass
    assert "Check the user name" in str(caught.value)


@pytest.fixture
def encrypted_key(slurm_cluster: ClusterSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cluster's key, protected by the passphrase "secret", with no ssh-agent to fall back on."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = tmp_path / "encrypted_key"
    shutil.copyfile(slurm_cluster.key_file, key)
    key.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(key)], check=True, capture_output=True
    )
    return str(key)


async def test_passphrase_protected_key_without_passphrase_or_agent(
    slurm_cluster: ClusterSettings, encrypted_key: str
) -> None:
    with pytest.raises(ConnectError, match="passphrase-protected and no passphrase was given") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, key_file=encrypted_key)):
            pass
    assert encrypted_key in str(caught.value)
    assert "ssh-add" in str(caught.value)


async def test_wrong_passphrase(slurm_cluster: ClusterSettings, encrypted_key: str) -> None:
    options = session_options(slurm_cluster, key_file=encrypted_key, passphrase="not it")
    with pytest.raises(ConnectError, match=r"cannot decrypt .*Check the passphrase") as caught:
        async with SlurmSession("127.0.0.1", **options):
            pass
    assert encrypted_key in str(caught.value)
    options["passphrase"] = "secret"
    async with SlurmSession("127.0.0.1", **options) as session:
        assert await (await session.submit(add, (1, 2))) == 3


def _unreadable_file() -> str:
    """A file this process cannot read even as root (the kernel allows only writing it)."""
    path = "/proc/sys/vm/compact_memory"
    try:
        Path(path).read_bytes()
    except PermissionError:
        return path
    pytest.skip(f"{path} is readable here; no file to stand for an unreadable key")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        pytest.param("missing", ["does not exist", "check key_file="], id="missing"),
        pytest.param("directory", ["is a directory, not a file", "check key_file="], id="directory"),
        pytest.param("public", ["is not a private key", "not the public .pub file"], id="public-key"),
        pytest.param("garbage", ["is not a private key", "Pass key_file= the private key"], id="not-a-key"),
        pytest.param("unreadable", ["permission denied", "chmod 600"], id="unreadable"),
    ],
)
async def test_key_file_that_cannot_be_used(
    slurm_cluster: ClusterSettings, tmp_path: Path, key: str, words: list[str]
) -> None:
    garbage = tmp_path / "garbage_key"
    garbage.write_text("this is not a key\n")
    path = {
        "missing": str(tmp_path / "no_such_key"),
        "directory": str(tmp_path),
        "public": f"{slurm_cluster.key_file}.pub",
        "garbage": str(garbage),
    }.get(key) or _unreadable_file()
    with pytest.raises(ConnectError) as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, key_file=path)):
            pass
    message = str(caught.value)
    assert path in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        pytest.param(
            "ssh_config", ["the ssh config file", "does not exist", "ssh_config=()"], id="ssh-config"
        ),
        pytest.param(
            "cert_file", ["the certificate file", "does not exist", "Pass cert_file="], id="certificate"
        ),
    ],
)
async def test_other_connection_file_that_does_not_exist(
    slurm_cluster: ClusterSettings, tmp_path: Path, setting: str, words: list[str]
) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ConnectError) as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, **{setting: missing})):
            pass
    message = str(caught.value)
    assert missing in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


async def test_known_hosts_file_that_does_not_exist(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    missing = tmp_path / "no_known_hosts"
    with pytest.raises(ConnectError, match=r"the known_hosts file .* does not exist") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, known_hosts=missing)):
            pass
    assert str(missing) in str(caught.value)
    assert "ssh-keyscan" in str(caught.value)


async def test_host_key_not_in_known_hosts(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ConnectError, match=r"is not in .*so the server cannot be verified") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, known_hosts=empty)):
            pass
    assert f"ssh-keyscan -p {slurm_cluster.port} 127.0.0.1 >> {empty}" in str(caught.value)


# --------------------------------------------------------------------------------------------- the remote side


async def test_cloudpickle_missing_on_the_remote_side(slurm_cluster: ClusterSettings) -> None:
    # The cluster's own interpreter, without its site-packages: a real Python that lacks cloudpickle.
    bare = f"{slurm_cluster.remote_workdir}-barepython"
    login_shell(
        slurm_cluster,
        f"printf '#!/bin/sh\\nexec {slurm_cluster.python} -I -S \"$@\"\\n' > {bare} && chmod +x {bare}",
    )
    with pytest.raises(RemoteEnvironmentError, match="cloudpickle is not importable") as caught:
        async with SlurmSession("127.0.0.1", **session_options(slurm_cluster, python=bare)):
            pass
    message = str(caught.value)
    assert "No module named 'cloudpickle'" in message
    assert f"{bare} -m pip install --user 'cloudpickle==" in message


async def test_remote_workdir_that_is_a_file(slurm_cluster: ClusterSettings) -> None:
    with pytest.raises(RemoteEnvironmentError, match=r"'/etc/hostname/sb'.*Not a directory") as caught:
        async with SlurmSession(
            "127.0.0.1", **session_options(slurm_cluster, remote_workdir="/etc/hostname/sb")
        ):
            pass
    assert str(caught.value).count("Not a directory") == 1
    assert "Pass remote_workdir=" in str(caught.value)


@pytest.fixture
def small_disk(slurm_cluster: ClusterSettings) -> Iterator[Path]:
    """A 512 KiB tmpfs owned by the job user, in the job user's home: a disk that is easy to fill."""
    mount = Path(f"{slurm_cluster.remote_workdir}-small-{secrets.token_hex(3)}")
    mount.mkdir()
    user = pwd.getpwnam(slurm_cluster.user)
    options = f"size=512k,mode=700,uid={user.pw_uid},gid={user.pw_gid}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def other(x: int) -> int:
    return x


async def test_disk_full_in_the_remote_workdir(
    slurm_cluster: ClusterSettings, small_disk: Path, session_kwargs: dict[str, Any]
) -> None:
    options = {**session_kwargs, "remote_workdir": str(small_disk / "w")}
    async with SlurmSession("127.0.0.1", **options) as session:
        assert await (await session.submit(add, (1, 2))) == 3
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False)
        before = job_count(slurm_cluster)
        # The job's own files travel with its sbatch command: nothing is submitted when they cannot be written.
        with pytest.raises(SubmissionError, match="No space left on device") as caught:
            await session.submit(add, (1, 2))
        assert "could not write" in str(caught.value)
        assert "so no job was submitted" in str(caught.value)
        assert "pass remote_workdir= a directory with room" in str(caught.value)
        # A new function is uploaded over SFTP first, whose server only says "Failure".
        with pytest.raises(OSError, match="no space left on the remote disk") as refused:
            await session.submit(other, (1,))
        assert refused.value.errno == errno.ENOSPC
        assert "pass remote_workdir= a directory with room" in str(refused.value)
        assert job_count(slurm_cluster) == before
        filler.unlink()
        assert await (await session.submit(other, (4,))) == 4


# --------------------------------------------------------------------------------------------- jobs Slurm refuses


async def test_invalid_time_limit(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        with pytest.raises(SubmissionError, match="Invalid --time specification") as caught:
            await session.submit(add, (1, 2), JobSpec(options={"time": "ten minutes"}))
        assert "JobSpec options" in str(caught.value)
        with pytest.raises(SubmissionError, match="Invalid --mem specification"):
            await session.submit(add, (1, 2), JobSpec(options={"mem": "lots"}))


@pytest.fixture
def short_partition(slurm_cluster: ClusterSettings) -> Iterator[str]:
    """A partition whose time limit is one minute, on the cluster's nodes."""
    name = f"short{secrets.token_hex(3)}"
    env = {**os.environ, "SLURM_CONF": slurm_cluster.slurm_conf}
    scontrol = ["scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=1", "State=UP"]
    subprocess.run(slurm_cluster.admin_argv(scontrol), check=True, env=env, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(
            slurm_cluster.admin_argv(["scontrol", "delete", f"PartitionName={name}"]),
            check=False,
            env=env,
            capture_output=True,
        )


async def test_time_limit_over_the_partitions(short_partition: str, session_kwargs: dict[str, Any]) -> None:
    spec = JobSpec(options={"partition": short_partition, "time": "00:10:00"})
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(add, (1, 2), spec)
        with anyio.fail_after(15), pytest.raises(SubmissionError, match="PartitionTimeLimit"):
            await future


async def test_conda_env_that_does_not_exist(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(add, (1, 2), JobSpec(conda_env="no-such-env"))
        with pytest.raises(JobFailed, match="exit code 99") as caught:
            await future
    assert caught.value.exit_code == 99
    assert 'could not activate the conda environment "no-such-env"' in str(caught.value)


# --------------------------------------------------------------------------------------------- using the session


async def test_unpicklable_keyword_argument_and_map_item(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        with pytest.raises(PayloadError, match="Cannot send keyword argument 'b'") as caught:
            await session.submit(add, (1,), kwargs={"b": threading.Lock()})
        assert "create such objects inside the function" in str(caught.value)
        with pytest.raises(PayloadError, match=r"Cannot send args\[1\] \(a _thread.lock object\)"):
            await session.map(add, [1, 2], [3, threading.Lock()])


async def test_spec_that_is_not_a_jobspec(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        with pytest.raises(TypeError, match=r"spec must be a JobSpec, not dict.*JobSpec\(\.\.\.\)"):
            await session.submit(add, (1, 2), {"time": "00:10:00"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="at least one iterable"):
            await session.map(add)


async def test_submit_after_the_session_was_cancelled(session_kwargs: dict[str, Any]) -> None:
    session = SlurmSession("127.0.0.1", **session_kwargs)
    with anyio.CancelScope() as scope:
        async with session:
            future = await session.submit(add, (1, 2), JobSpec(setup=["sleep 60"]))
            scope.cancel()
            await anyio.sleep(30)
    assert scope.cancelled_caught
    with pytest.raises(JobCancelled, match="cancelled"):
        await future
    with pytest.raises(SessionClosedError, match="The session is closed"):
        await session.submit(add, (1, 2))
    with pytest.raises(SessionClosedError, match="can be entered only once; create a new one"):
        async with session:
            pass


async def test_submit_after_cancelling_a_job(session_kwargs: dict[str, Any]) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        future = await session.submit(add, (1, 2), JobSpec(setup=["sleep 60"]))
        assert await future.cancel()
        with pytest.raises(JobCancelled, match=f"job {future.job_id} was cancelled"):
            await future
        assert await (await session.submit(add, (2, 2))) == 4


@pytest.mark.parametrize("args", [5, "ab"], ids=repr)
async def test_args_that_are_not_a_sequence_of_arguments(session_kwargs: dict[str, Any], args: Any) -> None:
    async with SlurmSession("127.0.0.1", **session_kwargs) as session:
        with pytest.raises(TypeError, match=r"args must be a tuple or list of positional arguments"):
            await session.submit(add, args)


async def test_argument_or_function_over_the_size_limit(slurm_cluster: ClusterSettings) -> None:
    big = b"x" * 2_000_000

    def captures_big() -> int:
        return len(big)

    options = session_options(slurm_cluster, max_argument_bytes=1_000_000)
    async with SlurmSession("127.0.0.1", **options) as session:
        with pytest.raises(
            PayloadError, match=r"Cannot send args\[1\]: it pickles to 1\.9 MiB.*max_argument_bytes"
        ):
            await session.submit(add, (1, big))
        with pytest.raises(PayloadError, match=r"captures_big.*over max_argument_bytes=1000000"):
            await session.submit(captures_big)
        assert session._submitter.sbatch_calls == 0
