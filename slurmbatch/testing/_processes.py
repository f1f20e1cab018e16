"""Starting, watching and stopping the local cluster's daemons, by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs


class ClusterError(RuntimeError):
    """The local cluster could not be installed, started or stopped; the message says why and what to do."""


@attrs.frozen
class Daemon:
    """A process the cluster started: its role, pid and executable (to never signal a recycled pid)."""

    name: str
    pid: int
    exe: str

    def is_running(self) -> bool:
        """Return True if the pid still runs our executable and is not a zombie."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            # The executable, not the command line: sshd and slurmctld rewrite their process titles.
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        # The state letter follows the parenthesised command name, which may itself contain spaces.
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X") and os.path.realpath(exe) == os.path.realpath(self.exe)


def spawn(
    name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str], user: str | None = None
) -> Daemon:
    """Start ``argv`` in its own session, detached from our terminal, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            user=user,
        )
    return Daemon(name=name, pid=process.pid, exe=argv[0])


def reap(pid: int) -> None:
    """Collect a child's exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(daemons: Sequence[Daemon], *, grace: float = 10.0) -> None:
    """SIGTERM each running daemon, wait up to ``grace`` seconds, then SIGKILL what is left."""
    running = [d for d in daemons if d.is_running()]
    for daemon in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for daemon in running:
            reap(daemon.pid)
        running = [d for d in running if d.is_running()]
        if not running:
            return
        time.sleep(0.05)
    for daemon in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGKILL)
        reap(daemon.pid)


def processes_marked(marker: str, value: str) -> list[int]:
    """Pids whose environment has ``marker=value``: everything our daemons spawned, jobs included."""
    needle = f"{marker}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (not zombies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def kill_all(pids: Sequence[int]) -> None:
    """SIGKILL every pid in ``pids`` and reap those that are our children."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        reap(pid)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    raise_on_timeout: bool = True,
) -> None:
    """Poll ``check`` until it returns True; raise ClusterError naming ``what`` and the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    if not raise_on_timeout:
        return
    raise ClusterError(f"{what} did not happen within {timeout:.0f} s.{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
    """The last ``lines`` lines of ``log``, formatted to end an error message."""
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log}:\n" + "\n".join(tail)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> str:
    """Run a short command, return its stdout; raise ClusterError with its output when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    if done.returncode != 0:
        raise ClusterError(
            f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
        )
    return done.stdout


def succeeds(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 10.0) -> bool:
    """Return True if ``argv`` runs and exits 0 within ``timeout``."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, env=None if env is None else dict(env), timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
