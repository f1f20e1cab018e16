"""Another Slurm release beside the host's: a Debian root of its own, entered with ``chroot``.

The host (Debian bookworm) ships Slurm 22.05 and OpenSSH 9.2. For Slurm 24.11 (and OpenSSH 10.0, Python
3.13) the local cluster builds a Debian trixie root with ``mmdebstrap`` once, keeps it as a tarball in a
cache shared by every state directory (named after its package set, so a changed set builds a new one),
and unpacks it into the cluster's state directory. Its daemons run by ``chroot`` with ``/proc``, ``/dev``
(and ``/dev/shm``) and ``/sys`` bind-mounted, and with the state directory itself and ``/home``
bind-mounted at the same paths, so that every path in the generated configs means the same inside and
outside, and the job user's home (its keys, the remote work directories) is one directory.

User ids differ between the two systems (``munge`` is 102 on the host and 100 in trixie): files a daemon
of the root reads are owned by the root's ids, read from its ``/etc/passwd``. The job user is added to the
root with the host's ids.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import attrs

from ._processes import ClusterError, run

__all__ = ["RELEASES", "ChrootRelease", "Root"]

ROOT_CACHE = Path(os.environ.get("SLURMBATCH_ROOT_CACHE", "/var/cache/slurmbatch/roots"))
MIRROR = "http://deb.debian.org/debian"


@attrs.frozen
class ChrootRelease:
    """A Debian suite whose packages give one Slurm release."""

    slurm: str
    suite: str
    packages: tuple[str, ...]

    @property
    def key(self) -> str:
        """Names the cached root: a changed suite or package set builds a new one."""
        text = "\n".join([self.suite, MIRROR, *sorted(self.packages)])
        return f"{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


RELEASES: dict[str, ChrootRelease | None] = {
    "22.05": None,  # the host's own packages
    "24.11": ChrootRelease(
        slurm="24.11",
        suite="trixie",
        packages=(
            "slurm-wlm",
            "munge",
            "openssh-server",
            "openssh-sftp-server",
            "python3",
            "python3-venv",
            "tcsh",
            "procps",
        ),
    ),
}


def release(slurm: str) -> ChrootRelease | None:
    """The root for Slurm release ``slurm``, or None for the host's own; ValueError for others."""
    if slurm not in RELEASES:
        raise ValueError(f"slurm must be one of {', '.join(RELEASES)}, not {slurm!r}")
    return RELEASES[slurm]


@attrs.frozen
class Root:
    """One unpacked root in a cluster's state directory, and what is mounted into it."""

    path: Path
    release: ChrootRelease
    binds: tuple[Path, ...]

    @classmethod
    def in_state_dir(cls, state_dir: Path, chroot_release: ChrootRelease) -> Root:
        """The root of a cluster kept in ``state_dir``; its state directory and /home are bound in.

        ``/dev/shm`` is a mount of its own under ``/dev``: without it, the root's is a directory only root
        may write, and a job's ``multiprocessing`` (its semaphores) fails with a PermissionError.
        """
        return cls(
            state_dir / "root",
            chroot_release,
            (Path("/proc"), Path("/dev"), Path("/dev/shm"), Path("/sys"), state_dir, Path("/home")),
        )

    # ------------------------------------------------------------------------------------ building
    def tarball(self) -> Path:
        """Build the root's tarball once (about a minute), or reuse the cached one.

        Clusters started at the same time (test runs in parallel) build it once: the first takes a lock
        on the cache, the others wait for it and reuse its tarball.
        """
        cached = ROOT_CACHE / f"{self.release.key}.tar"
        if cached.exists():
            return cached
        ROOT_CACHE.mkdir(parents=True, exist_ok=True)
        with (ROOT_CACHE / f"{self.release.key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not cached.exists():
                self._build(cached)
        return cached

    def _build(self, cached: Path) -> None:
        if shutil.which("mmdebstrap") is None:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run(["apt-get", "update", "-qq"], env=env, timeout=600)
            run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
                env=env,
                timeout=1200,
            )
        partial = cached.with_suffix(".part.tar")
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(self.release.packages)}",
                self.release.suite,
                str(partial),
                MIRROR,
            ],
            timeout=1800,
        )
        partial.replace(cached)

    def unpack(self) -> None:
        """Unpack the cached root into the state directory, unless that very root is there already."""
        marker = self.path / ".slurmbatch-root"
        if marker.exists() and marker.read_text() == self.release.key:
            return
        tarball = self.tarball()
        self.unmount()
        if self.mounts():
            # Removing the old root now would remove what is bound into it (/home among them).
            raise ClusterError(f"cannot replace {self.path}: still mounted there: {self.mounts()}")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        run(["tar", "-xf", str(tarball), "-C", str(self.path)], timeout=600)
        marker.write_text(self.release.key)

    # ------------------------------------------------------------------------------------ mounts
    def mount(self) -> None:
        """Bind-mount what the root's daemons need; mounts already in place are kept."""
        for source in self.binds:
            target = self.inside(source)
            target.mkdir(parents=True, exist_ok=True)
            if not _is_mount(target):
                run(["mount", "--bind", str(source), str(target)], timeout=30)
        resolv = self.path / "etc" / "resolv.conf"
        if Path("/etc/resolv.conf").exists() and not resolv.is_symlink():
            shutil.copyfile("/etc/resolv.conf", resolv)

    def unmount(self) -> None:
        """Undo :meth:`mount` (also what a crashed run left mounted), innermost first."""
        for target in self.mounts():
            done = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)

    def mounts(self) -> list[Path]:
        """What is mounted inside the root, innermost first."""
        mounted = [Path(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()]
        inside = [m for m in mounted if _is_under(m, self.path)]
        return sorted(inside, key=lambda m: len(m.parts), reverse=True)

    def inside(self, path: Path | str) -> Path:
        """Where the host path ``path`` is, seen from the host, inside the root."""
        return self.path / str(path).lstrip("/")

    def executable(self, path: str) -> Path:
        """The file the root's program ``path`` is, seen from the host, its symbolic links followed
        inside the root (Debian's alternatives link ``/usr/sbin/slurmctld`` to an absolute path, which
        the host would resolve against its own files)."""
        current = PurePosixPath("/")
        parts = list(PurePosixPath(path).parts[1:])
        for _ in range(64):  # a bound on links, as the kernel has one
            if not parts:
                return self.inside(str(current))
            part = parts.pop(0)
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            host = self.inside(str(candidate))
            if host.is_symlink():
                target = PurePosixPath(os.readlink(host))
                parts = list(target.parts[1:] if target.is_absolute() else target.parts) + parts
                current = PurePosixPath("/") if target.is_absolute() else current
            else:
                current = candidate
        raise ClusterError(f"{path} in {self.path} is a loop of symbolic links")

    # ------------------------------------------------------------------------------------ users
    def ids(self, name: str) -> tuple[int, int]:
        """The uid and gid of user ``name`` in the root (they differ from the host's)."""
        for line in (self.path / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        raise ClusterError(f"the {self.release.suite} root has no user {name!r}")

    def add_host_user(self, name: str) -> None:
        """Give the root the host user ``name`` with the host's ids, home and shell (as the same person).

        Its primary group comes along; the password field stays ``*`` (key logins only).
        """
        entry = _line("/etc/passwd", name)
        group_name = _group_name(int(entry.split(":")[3]))
        self._set_line("passwd", entry)
        self._set_line("group", _line("/etc/group", group_name))
        self._set_line("shadow", f"{name}:*:19000:0:99999:7:::")

    def add_host_group(self, name: str) -> None:
        """Give the root the host group ``name`` with the host's gid and members (sshd's AllowGroups)."""
        self._set_line("group", _line("/etc/group", name))

    def _set_line(self, file: str, line: str) -> None:
        name = line.split(":", 1)[0]
        path = self.path / "etc" / file
        kept = [existing for existing in path.read_text().splitlines() if existing.split(":", 1)[0] != name]
        path.write_text("\n".join([*kept, line]) + "\n")

    def argv(self, argv: list[str], *, user: str | None = None) -> list[str]:
        """``argv`` run inside the root, as ``user`` (``uid:gid``) if given."""
        return ["chroot", *([f"--userspec={user}"] if user else []), str(self.path), *argv]

    def processes(self) -> list[int]:
        """Pids of processes whose root directory is this root: what must stop before unmounting."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "root") == str(self.path):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def _line(file: str, name: str) -> str:
    for line in Path(file).read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line
    raise ClusterError(f"{file} has no entry {name!r}")


def _group_name(gid: int) -> str:
    for line in Path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(gid):
            return fields[0]
    raise ClusterError(f"/etc/group has no group {gid}")


def _is_mount(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path != root
