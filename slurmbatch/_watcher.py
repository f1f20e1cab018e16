"""Finished results pushed from the login node instead of polled: one watcher per session.

A small remote program (``slurmbatch/remote/watch.sh``: POSIX sh, ``ls`` and ``awk``, since the login
node's python may differ from the jobs' one or be missing) runs on the login node for the whole session,
on ONE channel of the pool. It lists the results directory every ``interval`` seconds with plain readdir
calls (inotify would not see files that compute nodes create over NFS or Lustre), and prints the names
that appeared and disappeared since the listing before, then ``.``. A quiet program prints a lone ``.``
every ``heartbeat`` seconds. It costs the scheduler nothing.

`ResultWatcher` reads those lines and hands over each listing's changes at once, so that results which
finished together are fetched together. If the program ends, its connection drops, or it says nothing,
not even a heartbeat, for ``silence_limit`` seconds, the watcher reports itself down and starts a new
program after a growing pause. A new program's first listing names every file present: the caller
replaces what it knew with it, so nothing that finished while the watcher was down is missed.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import random
import shlex
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from ._errors import ConnectError, SessionClosedError
from .transport import Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["ResultWatcher", "watch_command"]

#: The name the remote program runs under (its ``$0``): it shows in ``ps`` on the login node.
PROGRAM_NAME = "slurmbatch-watch"

_RESTART_FIRST = 0.2  # seconds before the first restart; doubles per failure in a row
_RESTART_CAP = 10.0
_MISSING_EXIT = "it ended with exit status 2"  # watch.sh: the directory does not exist
_STABLE_AFTER = 10.0  # a program up this long resets the pause before the next restart


def watch_command(results_dir: str, *, interval: float, heartbeat: float) -> str:
    """The remote command that watches ``results_dir`` (see the module docstring)."""
    source = importlib.resources.files("slurmbatch.remote").joinpath("watch.sh").read_text()
    # Comments stay in the file; the command line (and ps on the login node) gets the code only.
    code = "\n".join(
        line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    beat = max(1, math.ceil(heartbeat / interval))
    # Run by /bin/sh from stdin (`SSHPool.stream_script`), never by the login shell: exec, so that only
    # the framing shell stands between sshd and the watcher, in the same process group for SIGTERM.
    return f"exec sh -c {shlex.quote(code)} {PROGRAM_NAME} " + shlex.join(
        [results_dir, f"{interval:g}", str(beat)]
    )


class ResultWatcher:
    """Keeps one remote watcher of the results directory running, and reports what it sees.

    Args:
        pool: The pool whose channel the program holds.
        results_dir: The absolute remote directory to watch.
        on_listing: Called with ``(appeared, gone, complete)`` once per changed listing. ``complete`` is
            true for a new program's first listing: ``appeared`` then names every file present, and
            ``gone`` is empty.
        on_down: Called when a program that had listed once stops, or a first one cannot start.
        interval: Seconds between two listings.
        heartbeat: Seconds between two lines of a quiet program.
        silence_limit: Seconds without any line after which the program is taken for dead.
    """

    def __init__(
        self,
        pool: Transport,
        results_dir: str,
        *,
        on_listing: Callable[[list[str], list[str], bool], None],
        on_down: Callable[[], None],
        on_missing: Callable[[], Awaitable[None]] | None = None,
        interval: float = 0.1,
        heartbeat: float = 1.0,
        silence_limit: float = 5.0,
    ) -> None:
        self._pool = pool
        self._command = watch_command(results_dir, interval=interval, heartbeat=heartbeat)
        self._on_listing = on_listing
        self._on_down = on_down
        self._on_missing = on_missing
        self._silence_limit = silence_limit
        self._up = False
        self._reported_down = False
        self._paused = False
        self._resumed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        #: Programs started so far (1 while the first one runs).
        self.starts = 0
        #: Changed listings received so far.
        self.listings = 0

    @property
    def up(self) -> bool:
        """Whether a program is running and has delivered its first listing."""
        return self._up

    def pause(self) -> None:
        """Stop the program until `resume` (nothing to watch: spare the login node)."""
        self._paused = True
        if self._scope is not None:
            self._scope.cancel()

    def resume(self) -> None:
        """Start a program again after `pause`; its first listing is complete, as after any start."""
        self._paused = False
        self._resumed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep a program running, except while paused, until cancelled or until the pool is closed."""
        task_status.started()
        while True:
            if self._paused:
                self._resumed = anyio.Event()
                await self._resumed.wait()
                continue
            # pause() cancels this scope: then the program was stopped on purpose, and the pool is open.
            closed = False
            with anyio.CancelScope() as self._scope:
                closed = await self._keep_running()
            self._scope = None
            if closed:
                return

    async def _keep_running(self) -> bool:
        """Restart programs as they stop, until cancelled; return True once the pool is closed."""
        failures = 0
        while True:
            started_at = anyio.current_time()
            up_at: float | None = None
            try:
                up_at, why = await self._watch()
                if why == _MISSING_EXIT and self._on_missing is not None:
                    # Someone removed the directory: have it recreated, then watch it again.
                    await self._on_missing()
            except ConnectError as exc:
                why = f"its connection failed: {exc}"
            except SessionClosedError:
                return True
            finally:
                self._up = False
            stable = up_at is not None and anyio.current_time() - up_at >= _STABLE_AFTER
            failures = 1 if stable else failures + 1
            pause = random.uniform(0.5, 1.0) * min(_RESTART_CAP, _RESTART_FIRST * 2 ** (failures - 1))
            logger.warning(
                "the result watcher on the login node stopped after %.1f s (%s); restarting in %.1f s",
                anyio.current_time() - started_at,
                why,
                pause,
            )
            if not self._reported_down:  # once per outage, not once per failed restart
                self._reported_down = True
                self._on_down()
            await anyio.sleep(pause)

    async def _watch(self) -> tuple[float | None, str]:
        """Run one program until it ends or goes silent; return when it first listed (if it did) and why
        it stopped."""
        up_at: float | None = None
        appeared: list[str] = []
        gone: list[str] = []
        async with self._pool.stream_script(self._command) as lines:
            self.starts += 1
            logger.debug("result watcher %d started", self.starts)
            while True:
                line: str | None = None
                with anyio.move_on_after(self._silence_limit):
                    line = await anext(lines, "")  # "" at the end: the program prints no empty line
                if line is None:
                    return up_at, f"no line, not even a heartbeat, for {self._silence_limit:g} s"
                if not line:
                    if lines.exit_signal is not None:
                        return up_at, f"it was ended by signal {lines.exit_signal}"
                    return up_at, f"it ended with exit status {lines.exit_status}"
                kind, name = line[0], line[1:]
                if kind == "+":
                    appeared.append(name)
                elif kind == "-":
                    gone.append(name)
                elif line == ".":
                    if appeared or gone or up_at is None:
                        self.listings += 1
                        self._on_listing(appeared, gone, up_at is None)
                        appeared, gone = [], []
                    if up_at is None:
                        up_at = anyio.current_time()
                        self._up = True
                        self._reported_down = False
                else:
                    logger.warning("result watcher: %s", line.removeprefix("!"))
