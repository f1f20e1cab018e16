"""The SSH transport against the local cluster's real OpenSSH sshd, under asyncio and trio."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from slurmbatch._errors import ConnectError, SessionClosedError
from slurmbatch.testing import ClusterSettings, LocalCluster
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.transport import CommandResult, ConnectSettings, SSHPool

pytestmark = pytest.mark.anyio
needs_cluster = pytest.mark.cluster


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings_for(cluster: ClusterSettings, **overrides: Any) -> ConnectSettings:
    values: dict[str, Any] = {
        "host": cluster.host,
        "port": cluster.port,
        "user": cluster.user,
        "key_files": (cluster.key_file,),
        "known_hosts": cluster.known_hosts,
        "ssh_config": (),
    }
    values.update(overrides)
    return ConnectSettings(**values)


@pytest.fixture(scope="module")
def low_sessions_port(local_cluster: LocalCluster) -> int:
    """A second sshd of the cluster that allows only 3 channels per connection."""
    return local_cluster.start_sshd(max_sessions=3)


@pytest.fixture
def spare_sshd_port(local_cluster: LocalCluster) -> int:
    """Another sshd of the cluster, which a test may stop and restart."""
    return local_cluster.start_sshd()


def sshd_log(cluster: ClusterSettings, port: int | None = None) -> SshdLogMark:
    log = Path(cluster.sshd_log)
    return SshdLogMark.now(log if port is None else log.with_name(f"sshd-{port}.log"))


def remote_pids(cluster: ClusterSettings, pattern: str) -> list[int]:
    """Processes of the job user whose command line matches ``pattern`` (sshd runs on this machine)."""
    done = subprocess.run(["pgrep", "-u", cluster.user, "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


async def wait_until(condition: Any, seconds: float = 10.0) -> None:
    """Poll ``condition`` (state outside this process, such as remote processes) until it holds."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - nothing here can signal an Event
            await anyio.sleep(0.05)


def unique_sleep() -> str:
    return f"sleep 30.{secrets.randbelow(10**6):06d}"


@pytest.fixture
def clean_remote_processes(slurm_cluster: ClusterSettings) -> Iterator[list[str]]:
    """Patterns of remote processes a test started; any left over are killed afterwards."""
    patterns: list[str] = []
    yield patterns
    for pattern in patterns:
        for pid in remote_pids(slurm_cluster, pattern):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------- settings


def test_channel_and_connection_limits_are_checked_in_plain_words() -> None:
    settings = ConnectSettings(host="example.org", ssh_config=())
    for bad in (0, 65, True, 8.5):
        with pytest.raises(ValueError, match="max_channels must be a whole number from 1 to 64"):
            SSHPool(settings, max_channels=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections must be a whole number from 1 to 64"):
        SSHPool(settings, max_connections=0)
    with pytest.raises(ValueError, match="reconnect_deadline must be a positive number of seconds"):
        SSHPool(settings, reconnect_deadline=0)
    with pytest.raises(ValueError, match=r"ConnectSettings\.port must be a TCP port"):
        ConnectSettings(host="example.org", port=70000)
    with pytest.raises(ValueError, match=r"ConnectSettings\.host must be a non-empty"):
        ConnectSettings(host=" ")


def test_passphrase_is_not_shown() -> None:
    assert "hunter2" not in repr(ConnectSettings(host="example.org", passphrase="hunter2", ssh_config=()))


# --------------------------------------------------------------------------------------------- commands


@needs_cluster
async def test_200_concurrent_commands_share_one_connection(slurm_cluster: ClusterSettings) -> None:
    mark = sshd_log(slurm_cluster)
    results: dict[int, CommandResult] = {}

    async def echo(n: int) -> None:
        results[n] = await pool.run(f"echo {n}")

    async with SSHPool(settings_for(slurm_cluster), max_connections=1, max_channels=8) as pool:
        async with anyio.create_task_group() as group:
            for n in range(200):
                group.start_soon(echo, n)
        stats = pool.stats

    assert {n: (r.exit_status, r.stdout) for n, r in results.items()} == {
        n: (0, f"{n}\n") for n in range(200)
    }
    assert stats.connections_opened == 1
    assert stats.connections_lost == 0
    assert 1 < stats.channels_in_use_peak <= 8
    assert stats.channels_in_use == 0
    assert mark.logins() == 1


@needs_cluster
async def test_exit_status_output_and_input_are_returned(slurm_cluster: ClusterSettings) -> None:
    async with SSHPool(settings_for(slurm_cluster)) as pool:
        failed = await pool.run("echo out; echo err >&2; exit 3")
        echoed = await pool.run("cat", input="héllo\n")
        counted = await pool.run("wc -c", input=b"\x00\xff\x01")
        no_input = await pool.run("cat")  # must see end of file at once rather than hang
    assert (failed.exit_status, failed.stdout, failed.stderr, failed.ok) == (3, "out\n", "err\n", False)
    assert echoed.stdout == "héllo\n"
    assert counted.stdout.strip() == "3"
    assert no_input == CommandResult(command="cat", exit_status=0, stdout="", stderr="")


@needs_cluster
async def test_refused_channels_are_retried_not_raised(
    slurm_cluster: ClusterSettings, low_sessions_port: int
) -> None:
    mark = sshd_log(slurm_cluster, low_sessions_port)
    settings = settings_for(slurm_cluster, port=low_sessions_port)
    outputs: list[str] = []

    async def work(n: int) -> None:
        outputs.append((await pool.run(f"sleep 0.05; echo {n}")).stdout)

    async with SSHPool(settings, max_connections=1, max_channels=8) as pool:
        async with anyio.create_task_group() as group:
            for n in range(40):
                group.start_soon(work, n)
        stats = pool.stats

    assert sorted(outputs) == sorted(f"{n}\n" for n in range(40))
    assert stats.channel_refusals_retried > 0
    assert mark.refused_sessions() == stats.channel_refusals_retried
    assert stats.connections_opened == 1


@needs_cluster
async def test_two_connections_share_the_load(slurm_cluster: ClusterSettings) -> None:
    mark = sshd_log(slurm_cluster)
    async with SSHPool(settings_for(slurm_cluster), max_connections=2, max_channels=4) as pool:
        async with anyio.create_task_group() as group:
            for _ in range(24):
                group.start_soon(pool.run, "sleep 0.2")
        stats = pool.stats
    assert stats.connections_opened == 2
    assert 4 < stats.channels_in_use_peak <= 8
    assert mark.logins() == 2


@needs_cluster
async def test_host_alias_from_ssh_config(slurm_cluster: ClusterSettings) -> None:
    settings = ConnectSettings(host=slurm_cluster.ssh_alias, ssh_config=(slurm_cluster.ssh_config,))
    async with SSHPool(settings) as pool:
        result = await pool.run("whoami")
    assert result.stdout.strip() == slurm_cluster.user


@pytest.fixture(scope="module")
def strict_startups_port(local_cluster: LocalCluster) -> int:
    """Another sshd of the cluster that drops every handshake beyond the first one in progress."""
    return local_cluster.start_sshd(max_startups="1:100:1")


@needs_cluster
async def test_one_pool_opens_its_connections_within_max_startups(
    slurm_cluster: ClusterSettings, strict_startups_port: int
) -> None:
    mark = sshd_log(slurm_cluster, strict_startups_port)
    settings = settings_for(slurm_cluster, port=strict_startups_port)
    # The default pacing: sshd frees a startup slot a moment after the client sees its login succeed, so
    # back-to-back handshakes (connect_interval=0) can still trip a MaxStartups of 1 on a busy machine.
    async with SSHPool(settings, max_connections=4, max_channels=2) as pool:
        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(pool.run, "sleep 0.3")
        stats = pool.stats
    assert stats.connections_opened == 4
    assert mark.logins() == 4
    assert "past MaxStartups" not in mark.text(), "handshakes go one at a time"


@needs_cluster
async def test_handshakes_dropped_past_max_startups_are_retried(
    slurm_cluster: ClusterSettings, strict_startups_port: int
) -> None:
    mark = sshd_log(slurm_cluster, strict_startups_port)
    settings = settings_for(slurm_cluster, port=strict_startups_port)
    pools = [SSHPool(settings, max_connections=1) for _ in range(6)]
    try:
        async with anyio.create_task_group() as group:
            for pool in pools:  # six clients at once: sshd drops all but one handshake at a time
                group.start_soon(pool.run, "true")
    finally:
        for pool in pools:
            await pool.aclose()
    assert "past MaxStartups" in mark.text(), "sshd did drop handshakes"
    assert mark.logins() == 6
    assert all(pool.stats.connections_opened == 1 for pool in pools)


# --------------------------------------------------------------------------------------------- cancellation


@needs_cluster
async def test_cancelling_a_command_returns_promptly_and_kills_it(
    slurm_cluster: ClusterSettings, clean_remote_processes: list[str]
) -> None:
    sleep = unique_sleep()
    clean_remote_processes.append(sleep)
    async with SSHPool(settings_for(slurm_cluster)) as pool:
        async with anyio.create_task_group() as group:
            # A compound command: the shell forks sleep, so the whole process group must get the signal.
            group.start_soon(pool.run, f"echo started; {sleep}; echo never")
            await wait_until(lambda: remote_pids(slurm_cluster, sleep))
            started = time.monotonic()
            group.cancel_scope.cancel()
        assert time.monotonic() - started < 1.0
        await wait_until(lambda: not remote_pids(slurm_cluster, sleep), seconds=5)
        assert pool.stats.channels_in_use == 0
        assert (await pool.run("echo still usable")).stdout == "still usable\n"


@needs_cluster
async def test_cancelling_one_caller_leaves_the_others_alone(
    slurm_cluster: ClusterSettings, clean_remote_processes: list[str]
) -> None:
    sleep = unique_sleep()
    clean_remote_processes.append(sleep)
    outputs: list[str] = []

    async def slow_echo(n: int) -> None:
        outputs.append((await pool.run(f"sleep 0.5; echo {n}")).stdout)

    async def doomed() -> None:
        with anyio.move_on_after(0.2):
            await pool.run(sleep)

    pool = SSHPool(settings_for(slurm_cluster), max_connections=1, max_channels=8)
    async with pool, anyio.create_task_group() as group:
        group.start_soon(doomed)
        for n in range(5):
            group.start_soon(slow_echo, n)
    assert sorted(outputs) == [f"{n}\n" for n in range(5)]


@needs_cluster
async def test_timeout_stops_the_command(
    slurm_cluster: ClusterSettings, clean_remote_processes: list[str]
) -> None:
    sleep = unique_sleep()
    clean_remote_processes.append(sleep)
    async with SSHPool(settings_for(slurm_cluster)) as pool:
        with pytest.raises(TimeoutError, match=f"'{sleep}' did not finish within 0.5 s on 127.0.0.1:"):
            await pool.run(sleep, timeout=0.5)
    await wait_until(lambda: not remote_pids(slurm_cluster, sleep), seconds=5)


# --------------------------------------------------------------------------------------------- SFTP


@needs_cluster
async def test_sftp_round_trip(slurm_cluster: ClusterSettings) -> None:
    base = f"{slurm_cluster.remote_workdir}/transport-{secrets.token_hex(4)}"
    files = {f"{base}/in/{n:03d}.bin": secrets.token_bytes(n * 997) for n in range(40)}
    async with SSHPool(settings_for(slurm_cluster)) as pool:
        async with pool.sftp() as sftp:
            await sftp.makedirs(f"{base}/in")
            await sftp.makedirs(f"{base}/in")  # an existing directory is fine
            await sftp.put_many(files)
            got = await sftp.get_many([*files, f"{base}/in/missing.bin"])
            names = await sftp.listdir(f"{base}/in")
            await sftp.put(f"{base}/one.tmp", b"first")
            await sftp.put(f"{base}/one", b"old")
            await sftp.rename(f"{base}/one.tmp", f"{base}/one")  # replaces, like os.replace
            replaced = await sftp.get(f"{base}/one")
            assert await sftp.exists(f"{base}/one")
            await sftp.remove(f"{base}/one")
            assert not await sftp.exists(f"{base}/one")
            assert await sftp.realpath(f"{base}/in/../in") == f"{base}/in"
            with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
                await sftp.get(f"{base}/in/missing.bin")
        modes = await pool.run(f"stat -c '%a %n' {base} {base}/in/000.bin")
        await pool.run(f"rm -rf {base}")
        assert pool.stats.channels_in_use == 0
    assert got == {**files, f"{base}/in/missing.bin": None}
    assert names == sorted(Path(path).name for path in files)
    assert replaced == b"first"
    assert modes.stdout.split() == ["700", base, "600", f"{base}/in/000.bin"]


@needs_cluster
async def test_sftp_sessions_count_as_channels(slurm_cluster: ClusterSettings) -> None:
    async with SSHPool(settings_for(slurm_cluster), max_connections=1, max_channels=2) as pool:
        async with pool.sftp(), pool.sftp():
            assert pool.stats.channels_in_use == 2
            with anyio.move_on_after(0.3) as waited:
                await pool.run("true")  # no channel is free until an SFTP session ends
            assert waited.cancelled_caught
        assert (await pool.run("echo free")).stdout == "free\n"


# --------------------------------------------------------------------------------------------- connection errors


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_key(directory: Path, name: str, passphrase: str = "") -> str:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return str(path)


def public_key(private_key: str) -> str:
    """``<type> <base64>`` of a key pair made by `make_key`."""
    key_type, key_data, *_ = Path(f"{private_key}.pub").read_text().split()
    return f"{key_type} {key_data}"


async def connect_error(settings: ConnectSettings) -> ConnectError:
    async with SSHPool(settings) as pool:
        with pytest.raises(ConnectError) as raised:
            await pool.run("true")
    return raised.value


@needs_cluster
async def test_wrong_port_names_host_and_port(slurm_cluster: ClusterSettings) -> None:
    port = free_port()
    started = time.monotonic()
    error = await connect_error(settings_for(slurm_cluster, port=port))
    assert time.monotonic() - started < 5, "a refused first connection is not retried for minutes"
    assert f"127.0.0.1:{port}" in str(error)
    assert "refused" in str(error)
    assert error.host == "127.0.0.1"
    assert isinstance(error.cause, ConnectionRefusedError)


@needs_cluster
async def test_unknown_host_key_says_how_to_add_it(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    error = await connect_error(settings_for(slurm_cluster, known_hosts=str(known_hosts)))
    assert f"127.0.0.1:{slurm_cluster.port} is not in {known_hosts}" in str(error)
    assert f"ssh-keyscan -p {slurm_cluster.port} 127.0.0.1 >> {known_hosts}" in str(error)


@needs_cluster
async def test_changed_host_key_says_how_to_remove_the_stale_entry(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    other_key = public_key(make_key(tmp_path, "other_host_key"))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{slurm_cluster.port} {other_key}\n")
    error = await connect_error(settings_for(slurm_cluster, known_hosts=str(known_hosts)))
    assert "does not match" in str(error)
    assert f"ssh-keygen -R '[127.0.0.1]:{slurm_cluster.port}' -f {known_hosts}" in str(error)


@needs_cluster
async def test_host_key_check_can_be_switched_off(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    settings = settings_for(slurm_cluster, known_hosts=str(known_hosts), verify_host_key=False)
    async with SSHPool(settings) as pool:
        assert (await pool.run("echo unverified")).ok


@needs_cluster
async def test_wrong_key_names_user_and_key_file(slurm_cluster: ClusterSettings, tmp_path: Path) -> None:
    mark = sshd_log(slurm_cluster)
    key = make_key(tmp_path, "stranger")
    settings = settings_for(slurm_cluster, key_files=(key,))
    async with SSHPool(settings) as pool, anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(connect_error_from, pool)
    error = await connect_error(settings)
    assert f"127.0.0.1:{slurm_cluster.port} refused to log in user '{slurm_cluster.user}'" in str(error)
    assert key in str(error)
    # Requests queued behind a failed login share its error instead of each trying again.
    assert mark.text().count("Connection closed by authenticating user") <= 2


async def connect_error_from(pool: SSHPool) -> None:
    with pytest.raises(ConnectError, match="refused to log in"):
        await pool.run("true")


@needs_cluster
async def test_passphrase_protected_key_without_passphrase(
    slurm_cluster: ClusterSettings, tmp_path: Path
) -> None:
    key = make_key(tmp_path, "locked", passphrase="correct horse")
    error = await connect_error(settings_for(slurm_cluster, key_files=(key,)))
    assert f"{key} are passphrase-protected and no passphrase was given" in str(error)


@needs_cluster
async def test_unknown_alias(slurm_cluster: ClusterSettings) -> None:
    settings = ConnectSettings(host="no-such-alias", ssh_config=(slurm_cluster.ssh_config,))
    error = await connect_error(settings)
    assert "'no-such-alias': it is not a host name DNS knows" in str(error)
    assert slurm_cluster.ssh_config in str(error)


# --------------------------------------------------------------------------------------------- dropped connections


async def kill_serving_sshd(pool: SSHPool) -> None:
    """Kill the sshd processes serving the pool's connection, as a crash or network cut would."""
    lookup = await pool.run("echo $PPID $(ps -o ppid= -p $PPID)")  # sshd user@notty child, its [priv] parent
    pids = [int(pid) for pid in lookup.stdout.split()]
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # frozen first, so neither can close anything cleanly
        for pid in pids:
            os.kill(pid, sig)


@needs_cluster
async def test_dropped_connection_is_replaced_on_next_use(slurm_cluster: ClusterSettings) -> None:
    mark = sshd_log(slurm_cluster)
    async with SSHPool(settings_for(slurm_cluster), max_connections=1) as pool:
        await kill_serving_sshd(pool)
        result = await pool.run("echo after the drop")
        stats = pool.stats
    assert result.stdout == "after the drop\n"
    assert (stats.connections_opened, stats.connections_lost) == (2, 1)
    assert mark.logins() == 2


@needs_cluster
async def test_unresponsive_connection_is_found_by_keepalive_and_replaced(
    slurm_cluster: ClusterSettings,
) -> None:
    settings = settings_for(slurm_cluster, keepalive_interval=0.3)
    async with SSHPool(settings, max_connections=1) as pool:
        lookup = await pool.run("echo $PPID $(ps -o ppid= -p $PPID)")
        frozen = [int(pid) for pid in lookup.stdout.split()]
        try:
            for pid in frozen:  # the server stops answering, and no FIN ever arrives
                os.kill(pid, signal.SIGSTOP)
            with anyio.fail_after(10):
                result = await pool.run("echo alive")
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        stats = pool.stats
    assert result.stdout == "alive\n"
    assert (stats.connections_opened, stats.connections_lost) == (2, 1)


@needs_cluster
async def test_command_running_when_the_connection_drops_is_not_retried(
    slurm_cluster: ClusterSettings,
) -> None:
    async with SSHPool(settings_for(slurm_cluster), max_connections=1) as pool:
        async with anyio.create_task_group() as group:

            async def doomed() -> None:
                with pytest.raises(ConnectError, match="was lost while 'sleep 5' was running"):
                    await pool.run("sleep 5")

            group.start_soon(doomed)
            await anyio.sleep(0.3)
            await kill_serving_sshd(pool)
        assert (await pool.run("echo fine")).stdout == "fine\n"


@needs_cluster
async def test_reconnecting_gives_up_after_the_deadline_and_recovers_within_it(
    slurm_cluster: ClusterSettings, local_cluster: LocalCluster, spare_sshd_port: int
) -> None:
    settings = settings_for(slurm_cluster, port=spare_sshd_port)
    async with SSHPool(settings, max_connections=1, reconnect_deadline=2.0) as pool:
        await pool.run("true")
        # The listener goes away (as in a login node reboot); then the established connection drops.
        (listener,) = remote_sshd_listener(spare_sshd_port)
        os.kill(listener, signal.SIGTERM)
        await kill_serving_sshd(pool)

        started = time.monotonic()
        with pytest.raises(ConnectError, match=r"refused.*Gave up after retrying for 2\.\d s") as raised:
            await pool.run("true")
        assert 1.5 < time.monotonic() - started < 6
        assert f"127.0.0.1:{spare_sshd_port}" in str(raised.value)

        async def restart_soon() -> None:
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(local_cluster.restart_daemon, f"sshd-{spare_sshd_port}")

        async with anyio.create_task_group() as group:
            group.start_soon(restart_soon)
            result = await pool.run("echo back")  # retried until the new sshd listens
        stats = pool.stats
    assert result.stdout == "back\n"
    assert (stats.connections_opened, stats.connections_lost) == (2, 1)


def remote_sshd_listener(port: int) -> list[int]:
    done = subprocess.run(["pgrep", "-f", f"sshd -D .*sshd-{port}"], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


@needs_cluster
async def test_closed_pool_refuses_requests_and_leaves_no_thread(slurm_cluster: ClusterSettings) -> None:
    pool = SSHPool(settings_for(slurm_cluster))
    await pool.run("true")
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(SessionClosedError, match="closed"):
        await pool.run("true")
    assert not [thread for thread in threading.enumerate() if thread.name == "slurmbatch-asyncssh"]
