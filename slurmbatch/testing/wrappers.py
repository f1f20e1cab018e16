"""Misbehaving Slurm commands, made real: wrapper scripts placed first on the job user's PATH.

Each wrapper is a small POSIX sh script named like the command it wraps (``squeue``, ``sacct``,
``sbatch``, ``scancel``). It either runs the real command late, runs it and then lies about how it went,
or does not run it at all, the way overloaded controllers, broken accounting databases and chatty sites
behave. A session picks them up through its ``slurm_setup`` lines::

    wrappers = SlurmWrappers.create(tmp_dir)
    wrappers.slow("squeue", seconds=100)
    async with SlurmSession(host, slurm_setup=wrappers.setup_lines, ...) as session:
        ...

Wrappers that misbehave a limited number of ``times`` count their calls with ``mkdir`` (atomic, so
concurrent calls each take their own turn), then run the real command unchanged.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = ["SLURM_COMMANDS", "SUBMISSION_TIMED_OUT", "ZERO_BYTES", "SlurmWrappers"]

SLURM_COMMANDS = ("squeue", "sacct", "sbatch", "scancel")

#: What sbatch prints when slurmctld took the job but its answer did not arrive in time.
SUBMISSION_TIMED_OUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
#: What sbatch prints when the connection to slurmctld broke while the answer was on its way.
ZERO_BYTES = "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received"


@attrs.frozen
class SlurmWrappers:
    """A directory of wrapper scripts for Slurm's commands, and how to put it first on PATH.

    Attributes:
        directory: Where the wrappers are; readable and searchable by everyone, so the job user
            (another account than the test's) can run them.
        real: The directory of the real commands the wrappers call.
    """

    directory: Path
    real: Path

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], *, real: str | os.PathLike[str] | None = None
    ) -> SlurmWrappers:
        """Make ``directory`` (mode 0755) for wrappers of the real commands in ``real`` (default: where
        ``sbatch`` is found on this host's PATH)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        if real is None:
            found = shutil.which("sbatch")
            if found is None:
                raise FileNotFoundError("sbatch is not on PATH: pass real= the directory of Slurm's commands")
            real = Path(found).parent
        return cls(path, Path(real))

    @property
    def setup_lines(self) -> list[str]:
        """``slurm_setup`` lines that put the wrappers before the real commands."""
        return [f"export PATH={shlex.quote(str(self.directory))}:$PATH"]

    # ------------------------------------------------------------------------------- behaviours
    def slow(self, command: str, *, seconds: float, times: int | None = None) -> None:
        """``command`` sleeps ``seconds`` before it runs the real one (an overloaded slurmctld)."""
        self._write(command, f"sleep {seconds:g}\n" + self._real_exec(command), times)

    def failing(
        self, command: str, *, message: str | None = None, exit_status: int = 1, times: int | None = None
    ) -> None:
        """``command`` prints ``message`` on stderr and exits with ``exit_status`` without running.

        The default message is the one sacct gives when slurmdbd is down.
        """
        said = message or f"{command}: error: Problem talking to the database: Connection refused"
        self._write(command, f"printf '%s\\n' {shlex.quote(said)} >&2\nexit {exit_status}\n", times)

    def submitted_then_failed(self, *, message: str = SUBMISSION_TIMED_OUT, times: int | None = None) -> None:
        """``sbatch`` creates the job, throws its answer away, prints ``message`` and exits 1: the client
        cannot tell from the answer that the job exists."""
        body = f'{shlex.quote(str(self.real / "sbatch"))} "$@" >/dev/null 2>&1\n'
        body += f"printf '%s\\n' {shlex.quote(message)} >&2\nexit 1\n"
        self._write("sbatch", body, times)

    def noisy(self, command: str, *, before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
        """``command`` prints site notices on stdout before and after the real command's own output."""
        body = "".join(f"printf '%s\\n' {shlex.quote(line)}\n" for line in before)
        body += f'{shlex.quote(str(self.real / command))} "$@"\nsb_rc=$?\n'
        body += "".join(f"printf '%s\\n' {shlex.quote(line)}\n" for line in after)
        self._write(command, body + "exit $sb_rc\n", None)

    def killing_its_shell(self, command: str, *, times: int | None = None) -> None:
        """``command`` kills its whole process group: the remote command's shell and everything it
        started die (a login shell killed under a remote command), so the reply ends early."""
        self._write(command, "kill -9 0\nexit 1\n", times)

    def calls(self, command: str) -> int:
        """How many calls of ``command`` took a misbehaving turn (for wrappers with ``times``)."""
        turns = self.directory / f".{command}.turns"
        return len(list(turns.iterdir())) if turns.is_dir() else 0

    def remove(self, command: str) -> None:
        """Run the real ``command`` again."""
        (self.directory / command).unlink(missing_ok=True)
        shutil.rmtree(self.directory / f".{command}.turns", ignore_errors=True)

    # ------------------------------------------------------------------------------- writing
    def _real_exec(self, command: str) -> str:
        return f'exec {shlex.quote(str(self.real / command))} "$@"\n'

    def _write(self, command: str, misbehaviour: str, times: int | None) -> None:
        if command not in SLURM_COMMANDS:
            raise ValueError(f"{command!r} is not one of the wrapped commands {', '.join(SLURM_COMMANDS)}")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        lines = ["#!/bin/sh"]
        if times is None:
            lines.append(misbehaviour)
        else:
            turns = self.directory / f".{command}.turns"
            shutil.rmtree(turns, ignore_errors=True)
            turns.mkdir(mode=0o777)
            turns.chmod(0o777)  # the job user takes the turns
            quoted = shlex.quote(str(turns))
            # Take the first free turn; once all are taken, behave.
            lines += [
                "sb_turn=1",
                f"while [ $sb_turn -le {times} ]; do",
                f"  if mkdir {quoted}/$sb_turn 2>/dev/null; then",
                *(f"    {line}" for line in misbehaviour.splitlines()),
                "  fi",
                "  sb_turn=$((sb_turn + 1))",
                "done",
                self._real_exec(command),
            ]
        path = self.directory / command
        staged = path.with_name(f".{command}.new")
        staged.write_text("\n".join(lines) + "\n")
        staged.chmod(0o755)
        staged.replace(path)  # a command running right now keeps its old text
