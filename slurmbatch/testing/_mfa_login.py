"""A login node with multi-factor login, as many national sites run one: key, then a one-time code.

An extra sshd of the cluster with ``UsePAM yes`` and ``AuthenticationMethods
publickey,keyboard-interactive``, whose PAM stack asks Google Authenticator's module
(``libpam-google-authenticator``, installed here when missing) for a real RFC 6238 code of the job
user's secret. sshd names its PAM service after the program it was started as, so it runs through a
symlink of its own and reads ``/etc/pam.d/<that name>``; the system's ``sshd`` service is not touched.

The secret's file has no ``DISALLOW_REUSE`` and no ``RATE_LIMIT`` line, on purpose: a session's second
connection and every reconnect log in within the same 30 s window with the same code, so forbidding
reuse would make tests of reconnects depend on the clock (and sites that forbid it are served by a
ControlMaster, which logs in once). ``WINDOW_SIZE 3`` accepts the codes of the steps beside the
current one, as the module does by default.
"""

from __future__ import annotations

import base64
import glob
import os
import pwd
import secrets
import shlex
import sys
from pathlib import Path

import attrs

from . import _install
from ._control_master import ControlMaster
from ._layout import ClusterLayout, free_ports
from ._processes import succeeds, wait_until
from ._ssh_configs import SshdVariant, sshd_config
from ._state import StateFile

__all__ = ["MfaLoginNode", "start_mfa_login_node"]

PAM_SERVICE = "sshd-slurmbatch-mfa"
_SSHD_LINK = Path("/usr/local/sbin") / PAM_SERVICE
_PAM_MODULE = "pam_google_authenticator.so"


@attrs.frozen
class MfaLoginNode:
    """How to reach the multi-factor login node of the local cluster.

    Attributes:
        port: Its sshd's port on 127.0.0.1.
        user: The account that logs in (the job user): its key first, then a one-time code.
        ssh_config: An ssh client config with the ``alias`` of this node (key, known_hosts, port).
        alias: The ``Host`` alias in ``ssh_config``.
        totp_secret: The base32 TOTP secret the node checks codes against (``slurmbatch.totp_answers``).
        askpass: A program printing the current code, for the system ``ssh``'s ``SSH_ASKPASS``.
        sshd_log: Its sshd's log (one line per accepted login).
    """

    port: int
    user: str
    ssh_config: str
    alias: str
    totp_secret: str
    askpass: str
    sshd_log: str

    def ssh_env(self) -> dict[str, str]:
        """The environment under which the system ``ssh`` answers the code prompt without a terminal."""
        return {**os.environ, "SSH_ASKPASS": self.askpass, "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}

    def ssh_argv(self, *args: str) -> list[str]:
        """``ssh -F <ssh_config> <alias> args...``."""
        return ["ssh", "-F", self.ssh_config, self.alias, *args]

    def start_control_master(self, known_hosts: str) -> ControlMaster:
        """Log in once with the system ``ssh`` (key and code) as a ControlMaster; see `ControlMaster`."""
        return ControlMaster.start(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            known_hosts=known_hosts,
            login_argv=self.ssh_argv(),
            env=self.ssh_env(),
        )


def start_mfa_login_node(store: StateFile, job_user: str) -> MfaLoginNode:
    """Start (or reuse) the cluster's multi-factor sshd; return how to reach it."""
    state = store.require()
    layout = store.layout(state)
    _ensure_pam_module()
    user = pwd.getpwnam(job_user)
    mfa_dir = layout.state_dir / "mfa"
    mfa_dir.mkdir(mode=0o755, exist_ok=True)
    mfa_dir.chmod(0o755)  # the PAM module reads the secret as the user: the directory must be passable
    secret = str(state.setdefault("mfa", {}).get("secret") or _new_secret())
    secret_file = mfa_dir / f"{job_user}.google_authenticator"
    _write_secret(secret_file, secret, uid=user.pw_uid, gid=user.pw_gid)
    pam_file = Path("/etc/pam.d") / PAM_SERVICE
    pam_file.write_text(_pam_stack(mfa_dir))
    if not _SSHD_LINK.exists():
        _SSHD_LINK.parent.mkdir(parents=True, exist_ok=True)
        _SSHD_LINK.symlink_to("/usr/sbin/sshd")
    askpass = mfa_dir / "askpass"
    askpass.write_text(
        "#!/bin/sh\n# Prints the current one-time code of the MFA login node, for ssh's SSH_ASKPASS.\n"
        f"exec {shlex.quote(sys.executable)} -c 'import sys, slurmbatch; print(slurmbatch.totp(sys.argv[1]))' "
        f"{secret}\n"
    )
    askpass.chmod(0o700)

    known = state["mfa"].get("port")
    running = {d["name"] for d in state["daemons"]}
    port = int(known) if known is not None and f"sshd-{known}" in running else free_ports(1)[0]
    alias = "slurmbatch-mfa"
    client_config = layout.etc_dir / "ssh_config-mfa"
    client_config.write_text(_client_config(layout, alias=alias, user=job_user, port=port))
    node = MfaLoginNode(
        port=port,
        user=job_user,
        ssh_config=str(client_config),
        alias=alias,
        totp_secret=secret,
        askpass=str(askpass),
        sshd_log=str(layout.sshd_log(port)),
    )
    state["mfa"] = {"secret": secret, "port": port}
    store.save(state)
    if f"sshd-{port}" in running and succeeds(node.ssh_argv("true"), timeout=15, env=node.ssh_env()):
        return node
    config = layout.sshd_config(port)
    config.write_text(_sshd_config(layout, user=job_user, port=port))
    state = store.require()
    state["extra_sshd"][str(port)] = {**attrs.asdict(SshdVariant()), "mfa": True}
    log = layout.sshd_log(port)
    store.launch(state, f"sshd-{port}", [str(_SSHD_LINK), "-D", "-f", str(config), "-E", str(log)])
    ports = [layout.ports.sshd, *map(int, state["extra_sshd"])]
    _install.write_known_hosts(layout, sorted(set(ports)))
    wait_until(
        lambda: succeeds(node.ssh_argv("true"), timeout=15, env=node.ssh_env()),
        timeout=30,
        what=f"the MFA sshd accepting logins with a one-time code on {port}",
        log=log,
    )
    return node


def _ensure_pam_module() -> None:
    if not glob.glob(f"/lib/*/security/{_PAM_MODULE}") + glob.glob(f"/usr/lib/*/security/{_PAM_MODULE}"):
        _install.apt_install(["libpam-google-authenticator"])


def _new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def _write_secret(path: Path, secret: str, *, uid: int, gid: int) -> None:
    """Google Authenticator's file: the secret, then its options (see the module docstring for why)."""
    if path.exists():
        path.chmod(0o600)
    path.write_text(f'{secret}\n" TOTP_AUTH\n" WINDOW_SIZE 3\n')
    os.chown(path, uid, gid)
    path.chmod(0o400)  # the module refuses a secret others can read


def _pam_stack(mfa_dir: Path) -> str:
    return (
        "# The one-time code of the slurmbatch test cluster's MFA login node (its key was checked by sshd).\n"
        f"auth required {_PAM_MODULE} secret={mfa_dir}/${{USER}}.google_authenticator\n"
        "account required pam_unix.so\n"
        "session required pam_permit.so\n"
    )


def _sshd_config(layout: ClusterLayout, *, user: str, port: int) -> str:
    base = sshd_config(layout, SshdVariant(), user=user, port=port)
    base = base.replace("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes")
    base = base.replace("UsePAM no", "UsePAM yes")
    return base + "AuthenticationMethods publickey,keyboard-interactive\n"


def _client_config(layout: ClusterLayout, *, alias: str, user: str, port: int) -> str:
    # No BatchMode: it would forbid the code prompt. The system ssh answers it through SSH_ASKPASS.
    return (
        "\n".join(
            [
                f"Host {alias}",
                "    HostName 127.0.0.1",
                f"    Port {port}",
                f"    User {user}",
                f"    IdentityFile {layout.user_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {layout.known_hosts}",
                "    StrictHostKeyChecking yes",
                "    PreferredAuthentications publickey,keyboard-interactive",
            ]
        )
        + "\n"
    )
