"""One-time preparation of the machine: Debian packages, the job user, keys, the job side's Python."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from ._layout import ClusterLayout
from ._processes import ClusterError, run, succeeds
from ._root import Root

BASE_PACKAGES = {
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-client",
    "munged": "munge",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
ACCOUNTING_PACKAGES = {
    "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
}

# The job side's interpreter: the distribution's own Python, as on a real cluster.
JOB_PYTHON = "/usr/bin/python3"


def missing_packages(*, accounting: bool) -> list[str]:
    """Debian packages whose programs are not installed (searched in PATH and the sbin directories)."""
    wanted = dict(BASE_PACKAGES) | (ACCOUNTING_PACKAGES if accounting else {})
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = {package for program, package in wanted.items() if shutil.which(program, path=path) is None}
    if not succeeds([JOB_PYTHON, "-c", "import ensurepip, venv"]):
        missing.add("python3-venv")
    return sorted(missing)


def install_packages(*, accounting: bool) -> None:
    """apt-get install what is missing; refuse in plain words when not root."""
    apt_install(missing_packages(accounting=accounting))


def apt_install(missing: list[str]) -> None:
    """apt-get install the Debian packages ``missing`` (nothing when empty); refuse when not root."""
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterError(
            "The local cluster needs these Debian packages, which are not installed: "
            f"{' '.join(missing)}. Install them with `sudo apt-get install -y {' '.join(missing)}`, "
            "then run again as root (slurmd and munged need root to start jobs as another user)."
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, timeout=1200)


def ensure_root() -> None:
    """The cluster starts daemons as root and jobs as another user; say so plainly when not root."""
    if os.geteuid() != 0:
        raise ClusterError(
            "The local cluster must be started as root: slurmd starts jobs as the unprivileged job user "
            "and munged runs as the munge user. Run `sudo python -m slurmbatch.testing up`."
        )


def ensure_job_user(name: str) -> pwd.struct_passwd:
    """Create the unprivileged job user once, with a home directory and key-only ssh access."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    run(["useradd", "--create-home", "--shell", "/bin/bash", name])
    # useradd locks the password with "!", and sshd (UsePAM no) then refuses even key logins; "*" means
    # "no password" without "locked".
    run(["usermod", "-p", "*", name])
    return pwd.getpwnam(name)


def ensure_keys(layout: ClusterLayout, *, user: pwd.struct_passwd) -> None:
    """Generate the host key and the user's key once; (re)write authorized_keys."""
    layout.ssh_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    for key in (layout.host_key, layout.user_key):
        ensure_key(key)
    layout.authorized_keys.write_text(Path(f"{layout.user_key}.pub").read_text())
    # sshd's StrictModes wants the file owned by root or the user, and not writable by others.
    layout.authorized_keys.chmod(0o644)


def ensure_key(key: Path) -> None:
    """Generate an ed25519 key without passphrase at ``key`` (and ``key.pub``) unless it exists."""
    if not key.exists():
        comment = f"slurmbatch-local-{key.name}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])


def write_known_hosts(layout: ClusterLayout, ports: list[int]) -> None:
    """Record the host key for every sshd port, in the format ssh and asyncssh both read."""
    public = Path(f"{layout.host_key}.pub").read_text().split()
    entries = [f"[127.0.0.1]:{port} {public[0]} {public[1]}" for port in ports]
    layout.known_hosts.write_text("\n".join(entries) + "\n")


def job_python(layout: ClusterLayout) -> str:
    """The interpreter jobs run: a venv of the system Python with the client's cloudpickle version."""
    return str(layout.job_env / "bin" / "python")


def ensure_job_env(layout: ClusterLayout, *, root: Root | None = None) -> str:
    """Create the job side's venv once; keep its cloudpickle at the client's version (same major).

    With ``root``, the venv is made by the root's own Python (jobs run inside it), from a wheel fetched
    here: the root has no pip configuration of its own.
    """
    python = job_python(layout)
    wanted = version("cloudpickle")
    check = f"import cloudpickle, sys; sys.exit(cloudpickle.__version__ != {wanted!r})"

    def inside(argv: list[str]) -> list[str]:
        return argv if root is None else root.argv(argv)

    if Path(python).exists() and succeeds(inside([python, "-c", check])):
        return python
    if not Path(python).exists():
        run(inside([JOB_PYTHON, "-m", "venv", str(layout.job_env)]), timeout=300)
    install = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"cloudpickle=={wanted}"]
    if root is not None:
        wheels = layout.state_dir / "wheels"
        fetch = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
        run([*fetch, f"cloudpickle=={wanted}"], timeout=600)
        install = inside([*install, "--no-index", "--find-links", str(wheels)])
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise ClusterError(
            f"Installing cloudpickle {wanted} for the job side ({python}) failed; PyPI must be reachable.\n"
            f"{done.stderr.strip()}"
        )
    layout.job_env.chmod(0o755)
    return python
