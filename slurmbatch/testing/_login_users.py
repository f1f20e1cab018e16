"""Login users like real sites have: another login shell, start-up files that print.

Each login user is a real account (created once, like the job user), member of the cluster's login group
so that the sshds started with ``login_users=True`` let it in with the cluster's key. Its start-up files
are rewritten on every call: the ones given, and every other well-known start-up file back to the
distribution's quiet default, so a user keeps no noise from an earlier test.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from . import _install
from ._processes import ClusterError, run
from ._root import Root

__all__ = [
    "BASHRC_GREETING",
    "CSHRC_GREETING",
    "LOGIN_GROUP",
    "NOISY_BASHRC",
    "NOISY_BASHRC_STDERR",
    "NOISY_CSHRC",
    "SITE_NOTICE",
    "SITE_NOTICE_CSHRC",
    "ensure_login_user",
]

#: The group whose members the cluster's login-user sshds let in.
LOGIN_GROUP = "slurmbatch-login"

#: Login shells and the Debian package each comes from, installed when missing.
SHELL_PACKAGES = {
    "/bin/bash": "bash",
    "/usr/bin/bash": "bash",
    "/bin/sh": "dash",
    "/bin/dash": "dash",
    "/usr/bin/tcsh": "tcsh",
    "/bin/tcsh": "tcsh",
    "/usr/bin/zsh": "zsh",
    "/bin/zsh": "zsh",
    "/usr/bin/fish": "fish",
    "/usr/bin/ksh": "ksh",
}

# Start-up files a login shell reads for commands sshd starts (or for login shells): the ones managed.
STARTUP_FILES = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".cshrc",
    ".tcshrc",
    ".login",
    ".zshenv",
    ".zshrc",
    ".config/fish/config.fish",
)

BASHRC_GREETING = "Welcome to the local cluster (printed by ~/.bashrc)"
CSHRC_GREETING = "Welcome to the local cluster (printed by ~/.cshrc)"
SITE_NOTICE = "NOTICE: /scratch is purged every 30 days (from the site's ~/.cshrc)"

# bash runs ~/.bashrc for every command sshd starts, interactive or not; the line comes before any
# "not interactive: return" guard, as on sites that print from it.
NOISY_BASHRC: Mapping[str, str] = {".bashrc": f'echo "{BASHRC_GREETING}"\n'}
NOISY_BASHRC_STDERR: Mapping[str, str] = {".bashrc": f'echo "{BASHRC_GREETING}" >&2\n'}
# tcsh reads ~/.cshrc for every shell, `tcsh -c` included.
NOISY_CSHRC: Mapping[str, str] = {".cshrc": f'echo "{CSHRC_GREETING}"\n'}
SITE_NOTICE_CSHRC: Mapping[str, str] = {".cshrc": f'echo "{SITE_NOTICE}" > /dev/stderr\n'}

_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def check_name(name: str) -> None:
    """Refuse a user name useradd would refuse, in plain words."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"login user name {name!r} is not a valid Unix user name: use up to 32 lowercase letters, "
            "digits, '_' or '-', starting with a letter or '_' (e.g. 'sbtcsh')."
        )


def ensure_shell(shell: str) -> None:
    """Install the Debian package of ``shell`` when it is missing; refuse shells we don't know."""
    if Path(shell).exists():
        return
    package = SHELL_PACKAGES.get(shell)
    if package is None:
        raise ClusterError(
            f"The login shell {shell} does not exist, and the local cluster does not know which package "
            f"provides it. Install it yourself, or pick one of: {', '.join(sorted(SHELL_PACKAGES))}."
        )
    _install.apt_install([package])
    if not Path(shell).exists():
        raise ClusterError(f"Installing the Debian package {package} did not provide {shell}.")


def ensure_login_group(job_user: str) -> None:
    """Create the login group once; the job user is a member too, so it may use the same sshds."""
    try:
        group = grp.getgrnam(LOGIN_GROUP)
    except KeyError:
        run(["groupadd", "--system", LOGIN_GROUP])
        group = grp.getgrnam(LOGIN_GROUP)
    if job_user not in group.gr_mem:
        run(["usermod", "-a", "-G", LOGIN_GROUP, job_user])


def ensure_login_user(
    name: str, *, shell: str, dotfiles: Mapping[str, str], root: Root | None = None
) -> pwd.struct_passwd:
    """Create (or update) login user ``name`` with ``shell`` and exactly the start-up files ``dotfiles``.

    ``dotfiles`` maps paths relative to the home directory to their text. With ``root`` (the Debian root
    of another Slurm release), the account is made on the host as well, so that its ids and its home under
    the bound ``/home`` are the same on both sides, then copied into the root with the login group; the
    shell must be one the root has, and the defaults of other start-up files are the root's.
    """
    check_name(name)
    normalized: dict[str, str] = {}
    for path, text in dotfiles.items():
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(
                f"dotfiles key {path!r} must be a path inside the home directory, like '.bashrc'."
            )
        normalized[str(relative)] = text
    if root is None:
        ensure_shell(shell)
    else:
        ensure_root_shell(root, shell)
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--create-home", "--shell", shell, "--groups", LOGIN_GROUP, name])
    else:
        if user.pw_shell != shell:
            run(["usermod", "--shell", shell, name])
        run(["usermod", "-a", "-G", LOGIN_GROUP, name])
    # useradd locks the password ("!") and sshd then refuses even key logins; "*" is "no password".
    run(["usermod", "-p", "*", name])
    user = pwd.getpwnam(name)
    if root is not None:
        root.add_host_user(name)
        root.add_host_group(LOGIN_GROUP)
    skel = Path("/etc/skel") if root is None else root.inside("/etc/skel")
    _write_dotfiles(user, normalized, skel)
    return user


def ensure_root_shell(root: Root, shell: str) -> None:
    """Refuse a login shell the root lacks: its packages are fixed when the root is built."""
    if root.inside(shell).exists():
        return
    package = SHELL_PACKAGES.get(shell, "the package that provides it")
    raise ClusterError(
        f"The {root.release.suite} root of Slurm {root.release.slurm} has no login shell {shell}. Add "
        f"{package} to that release's packages in slurmbatch/testing/_root.py (a new root is built on the "
        "next `up`), or pick a shell it has."
    )


def _write_dotfiles(user: pwd.struct_passwd, dotfiles: Mapping[str, str], skel_dir: Path) -> None:
    home = Path(user.pw_dir)
    for path in sorted(set(STARTUP_FILES) | set(dotfiles)):
        target = home / path
        if path in dotfiles:
            text: str | None = dotfiles[path]
        else:
            skel = skel_dir / path
            text = skel.read_text() if skel.is_file() else None
        if text is None:
            if target.is_file() or target.is_symlink():
                target.unlink()
            continue
        # Written as root into a directory the user owns: never follow a link out of the home directory.
        if any((home / parent).is_symlink() for parent in target.relative_to(home).parents):
            raise ClusterError(f"{target.parent} is a symbolic link; remove it, then add the user again.")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Handed over to the user: the directories too, or the shell could not read them.
        for directory in [*reversed(target.relative_to(home).parents)][1:]:
            os.chown(home / directory, user.pw_uid, user.pw_gid)
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(0o644)
        os.chown(target, user.pw_uid, user.pw_gid)
