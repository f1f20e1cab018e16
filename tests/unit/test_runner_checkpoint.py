"""The runner's checkpoint protocol, run for real: a signal saves the call to resume with, and asks for
a requeue; the next run of the job resumes with the saved call."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch.remote.checkpoint import WARNED_SUFFIX, checked_resume_call, requeue_target

from .runner_support import CLOUDPICKLE_MAJOR, PYTHON_MINOR, read_outcome, run_runner, write_call

EXPECT = ["--expect-python", PYTHON_MINOR, "--expect-cloudpickle", CLOUDPICKLE_MAJOR]


class SignalledLoop:
    """Counts to ``until``; at ``warn_at`` it sends itself the checkpoint signal, as Slurm would."""

    def __init__(self, warn_at: int) -> None:
        self.done = 0
        self.warn_at = warn_at
        self.starts: list[int] = []

    def __call__(self, until: int) -> tuple[int, list[int]]:
        self.starts.append(self.done)
        while self.done < until:
            if self.done == self.warn_at:
                self.warn_at = -1
                os.kill(os.getpid(), signal.SIGUSR2)
            self.done += 1
        return self.done, self.starts

    def checkpoint(self, until: int) -> Any:
        return self, (until,), {}


def counts_to(until: int) -> int:
    os.kill(os.getpid(), signal.SIGUSR2)  # no checkpoint method: the signal is ignored
    return until


def fake_scontrol(directory: Path) -> Path:
    """An ``scontrol`` that records its arguments and then ends its caller, as a requeue would."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" > {directory}/scontrol.args\nkill -TERM $PPID\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_a_signal_saves_the_resume_call_and_the_next_run_resumes_it(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    fn_path, args_path = write_call(tmp_path, SignalledLoop(warn_at=3), 10)
    resume, result = tmp_path / "resume.pkl", tmp_path / "res.pkl"
    argv = ["run", fn_path, args_path, result, *EXPECT, "--resume", resume, "--checkpoint-signal", "USR2"]
    env = {"PATH": f"{fake_scontrol(tmp_path)}:{os.environ['PATH']}", "SLURM_JOB_ID": "77"}

    first = run_runner(runner_file, *argv, env=env)
    assert first.returncode == -signal.SIGTERM, first.stderr
    assert "checkpoint saved; requeueing job 77" in first.stderr
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "77"]
    assert not result.exists()
    saved, saved_args, saved_kwargs = cloudpickle.loads(resume.read_bytes())
    assert (saved.done, saved_args, saved_kwargs) == (3, (10,), {})

    second = run_runner(runner_file, *argv, env=env | {"SLURM_RESTART_COUNT": "1"})
    assert second.returncode == 0, second.stderr
    assert cloudpickle.loads(read_outcome(result)["value"]) == (10, [0, 3])


def test_without_a_checkpoint_method_the_signal_is_ignored(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    fn_path, args_path = write_call(tmp_path, counts_to, 5)
    resume, result = tmp_path / "resume.pkl", tmp_path / "res.pkl"
    argv = ["run", fn_path, args_path, result, *EXPECT, "--resume", resume, "--checkpoint-signal", "USR2"]
    proc = run_runner(runner_file, *argv)
    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(result)["value"]) == 5
    assert not resume.exists()


def test_a_checkpoint_must_return_a_call_or_none() -> None:
    assert checked_resume_call(None) is None
    assert checked_resume_call((len, ["ab"], {})) == (len, ("ab",), {})
    for wrong in ((len, "ab"), ("len", (), {}), (len, (), [])):
        with pytest.raises(TypeError, match=r"\(callable, args, kwargs\)"):
            checked_resume_call(wrong)


def test_an_array_task_is_requeued_by_its_array_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "90")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert requeue_target() == "90"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "88")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert requeue_target() == "88_2"


def test_a_signal_that_came_while_the_job_started_makes_a_checkpoint_at_once(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    fn_path, args_path = write_call(tmp_path, SignalledLoop(warn_at=-1), 10)
    resume, result = tmp_path / "resume.pkl", tmp_path / "res.pkl"
    warned = Path(f"{resume}{WARNED_SUFFIX}")
    warned.touch()  # as the batch shell notes a signal that came before the runner could take it
    argv = ["run", fn_path, args_path, result, *EXPECT, "--resume", resume, "--checkpoint-signal", "USR2"]
    env = {"PATH": f"{fake_scontrol(tmp_path)}:{os.environ['PATH']}", "SLURM_JOB_ID": "78"}

    first = run_runner(runner_file, *argv, env=env)
    assert first.returncode == -signal.SIGTERM, first.stderr
    assert not warned.exists()
    saved, _, _ = cloudpickle.loads(resume.read_bytes())
    assert saved.done == 0 and saved.starts == []  # checkpointed before the call began
