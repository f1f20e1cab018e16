"""Checkpoint and requeue: what a job does when Slurm warns it that it is about to be stopped.

A job of a spec with ``requeue=True`` is sent a signal (``--signal=B:USR2@<lead>``) before its time limit,
and on preemption where the cluster is set to (``SlurmctldParameters=preempt_send_user_signal``). Its
batch script passes the signal on to the runner, which then asks the function for a checkpoint: if the
function has a ``checkpoint`` method, it is called with the call's own arguments and returns the call to
resume with, as ``(callable, args, kwargs)`` (or ``None``: no checkpoint now). That call is saved in the
job's resume file, and the job asks Slurm to requeue it (``scontrol requeue``). The requeued job finds
the resume file and runs the saved call instead of the original: its outcome is the job's.

A function without a checkpoint method ignores the signal: Slurm then requeues a preempted job, which
runs again from the start, and stops a job at its time limit as usual.
"""

from __future__ import annotations

import os
import signal
import sys

from .environment import LazyCloudpickle
from .files import write_atomically

#: Appended to the resume file's path: the file the batch shell creates when the signal arrives.
WARNED_SUFFIX = ".warned"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def requeue_target() -> str:
    """The job id ``scontrol requeue`` takes for this job: ``<array>_<task>`` for an array's task."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def checked_resume_call(value: object) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
    """The ``(callable, args, kwargs)`` a checkpoint method returned, or None if it returned None.

    Raises :class:`TypeError`, in words, for anything else.
    """
    if value is None:
        return None
    if (
        isinstance(value, tuple)
        and len(value) == 3
        and callable(value[0])
        and isinstance(value[1], (tuple, list))
        and isinstance(value[2], dict)
    ):
        return value[0], tuple(value[1]), value[2]
    raise TypeError(
        f"checkpoint() returned {type(value).__name__} {value!r:.200}; it must return the call to resume "
        "with as (callable, args, kwargs), e.g. (self, (step,), {}), or None for no checkpoint."
    )


def on_signal(
    signal_name: str,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    resume_path: str,
    cloudpickle: LazyCloudpickle,
) -> None:
    """Checkpoint ``fn(*args, **kwargs)`` and requeue the job when ``SIG<signal_name>`` arrives.

    Without a ``checkpoint`` method on ``fn`` the signal is ignored (its default action would kill the
    job at the warning instead of at the limit).
    """
    number = getattr(signal, f"SIG{signal_name.upper()}")
    hook = getattr(fn, "checkpoint", None)
    warned = resume_path + WARNED_SUFFIX  # the batch shell's note of a signal that came before now
    if not callable(hook):
        signal.signal(number, signal.SIG_IGN)
        _remove(warned)
        return

    def checkpoint_and_requeue(signum: int, frame: object) -> None:
        _remove(warned)
        try:
            resume = checked_resume_call(hook(*args, **kwargs))
            if resume is None:
                return
            write_atomically(resume_path, cloudpickle.module().dumps(resume))
        except Exception:
            import traceback  # only now: a task imports as little as it can

            print("slurmbatch runner: the checkpoint failed; the job runs on:", file=sys.stderr)
            traceback.print_exc()
            return
        if _request_requeue():
            import time

            while True:  # until Slurm stops this run of the job
                time.sleep(60)

    signal.signal(number, checkpoint_and_requeue)
    if os.path.exists(warned):  # Slurm's warning came while the job was starting: checkpoint now
        checkpoint_and_requeue(number, None)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _request_requeue() -> bool:
    import subprocess

    target = requeue_target()
    print(f"slurmbatch runner: checkpoint saved; requeueing job {target}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"slurmbatch runner: could not run scontrol requeue: {exc}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        print(f"slurmbatch runner: scontrol requeue {target} failed: {said}", file=sys.stderr, flush=True)
        return False
    return True
