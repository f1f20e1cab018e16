"""The local cluster's login side as real sites run it: login shells, noisy start-up files, sshd variants.

Everything is checked with the system's OpenSSH client or plain asyncssh, as a user would meet it: these
are the conditions the SDK's own tests run in.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import asyncssh
import attrs
import cloudpickle
import pytest

from slurmbatch.testing import (
    BASHRC_GREETING,
    NOISY_BASHRC,
    SITE_NOTICE,
    SITE_NOTICE_CSHRC,
    ClusterError,
    ClusterSettings,
    LocalCluster,
)
from slurmbatch.testing._processes import processes_marked
from slurmbatch.testing._ssh_configs import EXTERNAL_SFTP_SERVER
from slurmbatch.testing.cluster import MARKER
from slurmbatch.testing.logins import SshdLogMark
from slurmbatch.testing.pytest_plugin import TEST_OPTIONS, state_dir_for

pytestmark = pytest.mark.cluster

BANNER = "Authorized use only. Activity on this login node is logged."


def ssh(settings: ClusterSettings, command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ssh", "-F", settings.ssh_config, settings.ssh_alias, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def wait_for_state(settings: ClusterSettings, job_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ssh(settings, f"squeue -h -t all -j {job_id} -o %T").stdout.strip()
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def asyncssh_options(settings: ClusterSettings) -> dict[str, object]:
    return {
        "port": settings.port,
        "username": settings.user,
        "client_keys": [settings.key_file],
        "known_hosts": settings.known_hosts,
        "config": [],
    }


@pytest.fixture(scope="module")
def tcsh_user(local_cluster: LocalCluster) -> ClusterSettings:
    return local_cluster.login_user("sbtcsh", shell="/usr/bin/tcsh", dotfiles=SITE_NOTICE_CSHRC)


@pytest.fixture(scope="module")
def external_sftp_port(local_cluster: LocalCluster) -> int:
    return local_cluster.start_sshd(sftp="external", banner=BANNER, login_users=True)


@pytest.fixture(scope="module")
def noisy_user(local_cluster: LocalCluster, external_sftp_port: int) -> ClusterSettings:
    return local_cluster.login_user("sbnoisy", dotfiles=NOISY_BASHRC, port=external_sftp_port)


def test_a_tcsh_user_logs_in_with_tcsh_and_its_cshrc_notice_on_stderr(tcsh_user: ClusterSettings) -> None:
    done = ssh(tcsh_user, "echo $shell; id -un")
    assert done.stdout.split() == ["/usr/bin/tcsh", "sbtcsh"]
    assert SITE_NOTICE in done.stderr


def test_a_tcsh_user_runs_jobs_with_the_clusters_python(tcsh_user: ClusterSettings) -> None:
    workdir = tcsh_user.remote_workdir
    ssh(tcsh_user, f"mkdir -p {workdir}")
    script = "import cloudpickle, getpass; print(getpass.getuser(), cloudpickle.__version__)"
    job_id = ssh(
        tcsh_user, f"sbatch --parsable -o {workdir}/%j.out --wrap='{tcsh_user.python} -c \"{script}\"'"
    ).stdout.strip()
    assert job_id.isdigit()
    assert wait_for_state(tcsh_user, job_id) == "COMPLETED"
    assert ssh(tcsh_user, f"cat {workdir}/{job_id}.out").stdout.split() == ["sbtcsh", cloudpickle.__version__]


def test_a_printing_bashrc_prints_before_every_command(noisy_user: ClusterSettings) -> None:
    assert ssh(noisy_user, "echo hello").stdout == f"{BASHRC_GREETING}\nhello\n"


def test_the_banner_comes_before_authentication(noisy_user: ClusterSettings) -> None:
    assert BANNER in ssh(noisy_user, "true").stderr

    async def banner_seen() -> str:
        class Client(asyncssh.SSHClient):
            banner = ""

            def auth_banner_received(self, msg: str, lang: str) -> None:
                Client.banner += msg

        conn, _ = await asyncssh.create_connection(Client, "127.0.0.1", **asyncssh_options(noisy_user))
        conn.close()
        await conn.wait_closed()
        return Client.banner

    assert BANNER in asyncio.run(banner_seen())


def test_the_external_sftp_server_runs_through_the_login_shell(
    slurm_cluster: ClusterSettings, noisy_user: ClusterSettings, external_sftp_port: int
) -> None:
    quiet = attrs.evolve(slurm_cluster, port=external_sftp_port)

    async def sftp_server_processes(settings: ClusterSettings) -> list[str]:
        async with (
            asyncssh.connect("127.0.0.1", **asyncssh_options(settings)) as conn,
            conn.start_sftp_client() as sftp,
        ):
            assert await sftp.exists(settings.python)
            # On another Slurm release the program is the cluster root's copy: the host sees its path there.
            return [owner for exe, owner in _processes() if exe.endswith(EXTERNAL_SFTP_SERVER)]

    assert slurm_cluster.user in asyncio.run(sftp_server_processes(quiet))

    async def noisy_sftp() -> None:
        async with (
            asyncssh.connect("127.0.0.1", **asyncssh_options(noisy_user)) as conn,
            conn.start_sftp_client(),
        ):
            pass

    # The greeting lands in the SFTP stream, as on every Debian login node with a printing .bashrc.
    with pytest.raises(asyncssh.SFTPError):
        asyncio.run(noisy_sftp())


def test_an_sshd_without_sftp_refuses_the_subsystem(
    local_cluster: LocalCluster, slurm_cluster: ClusterSettings
) -> None:
    port = local_cluster.start_sshd(sftp="none")
    settings = attrs.evolve(slurm_cluster, port=port)

    async def try_sftp() -> str:
        async with asyncssh.connect("127.0.0.1", **asyncssh_options(settings)) as conn:
            assert (await conn.run("echo still a shell", check=True)).stdout == "still a shell\n"
            async with conn.start_sftp_client():
                pass
        return "sftp worked"

    with pytest.raises((asyncssh.ChannelOpenError, asyncssh.SFTPError)):
        asyncio.run(try_sftp())


def test_start_up_files_are_reset_to_quiet_when_not_given(local_cluster: LocalCluster) -> None:
    noisy = local_cluster.login_user("sbreset", dotfiles=NOISY_BASHRC)
    assert ssh(noisy, "echo hi").stdout == f"{BASHRC_GREETING}\nhi\n"
    quiet = local_cluster.login_user("sbreset")
    assert ssh(quiet, "echo hi").stdout == "hi\n"


def test_login_users_reach_only_sshds_that_let_them_in(local_cluster: LocalCluster) -> None:
    plain_port = local_cluster.start_sshd()
    with pytest.raises(ClusterError, match="login_users=True"):
        local_cluster.login_user("sbtcsh", shell="/usr/bin/tcsh", port=plain_port)
    with pytest.raises(ValueError, match="not a valid Unix user name"):
        local_cluster.login_user("Not A Name")
    with pytest.raises(ValueError, match="inside the home directory"):
        local_cluster.login_user("sbreset", dotfiles={"../.bashrc": "echo escaped\n"})


def test_down_stops_every_sshd_and_the_login_users_jobs() -> None:
    cluster = LocalCluster(
        state_dir_for("test-cluster-logins-lifecycle"), attrs.evolve(TEST_OPTIONS, nodes=1)
    )
    cluster.up()
    try:
        extra = cluster.start_sshd(banner=BANNER, sftp="external", login_users=True)
        jumps = cluster.start_jump_hosts()
        tcsh = cluster.login_user("sbtcsh", shell="/usr/bin/tcsh", dotfiles=SITE_NOTICE_CSHRC)
        mark = SshdLogMark.now(tcsh.sshd_log)
        ssh(tcsh, "sbatch --wrap='sleep 300'")
        assert mark.logins() == 1
        daemons = json.loads((cluster.state_dir / "cluster.json").read_text())["daemons"]
        sshd_ports = {d["name"] for d in daemons if d["name"].startswith("sshd-")}
        assert {f"sshd-{extra}", *(f"sshd-{port}" for port in jumps.ports.values())} <= sshd_ports
        deadline = time.monotonic() + 30
        while not _jobs_of("sbtcsh") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _jobs_of("sbtcsh"), "the login user's job runs"
    finally:
        cluster.down()
    assert processes_marked(MARKER, str(cluster.state_dir)) == []
    assert processes_marked("SLURM_CONF", tcsh.slurm_conf) == []
    for daemon in daemons:
        assert (
            not Path(f"/proc/{daemon['pid']}").exists()
            or "Z" in Path(f"/proc/{daemon['pid']}/stat").read_text()
        )
    assert cluster.status()["running"] is False
    # Another release's root had the state directory, /home, /proc, /dev and /sys bound into it.
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert [m for m in mounts if m.startswith(f"{cluster.state_dir}/")] == []


def _jobs_of(user: str) -> list[int]:
    """Pids of ``sleep 300`` processes of ``user`` (the job started above)."""
    return [pid for exe, owner, pid in _processes_with_pids() if owner == user and exe.endswith("/sleep")]


def _processes_with_pids() -> list[tuple[str, str, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            owner = pwd.getpwuid(entry.stat().st_uid).pw_name
        except (OSError, KeyError):
            continue
        found.append((exe, owner, int(entry.name)))
    return found


def _processes() -> list[tuple[str, str]]:
    return [(exe, owner) for exe, owner, _ in _processes_with_pids()]
