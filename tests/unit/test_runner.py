"""The job-side runner, run for real as a subprocess of this Python, as a batch script would run it."""

from __future__ import annotations

import importlib
import os
import pickle
import platform
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

from .runner_support import CLOUDPICKLE_MAJOR, PYTHON_MINOR, read_outcome, run_runner, write_call


class Boom(Exception):
    """An exception class the job side only knows because this module is pickled by value."""


def test_value_round_trip_leaves_output_in_the_job_logs(tmp_path: Path, runner_file: Path) -> None:
    def add(x: int, y: int = 1) -> dict[str, int]:
        print("progress on stdout")
        print("warning on stderr", file=sys.stderr)
        return {"sum": x + y}

    fn_path, args_path = write_call(tmp_path, add, 2, y=5)
    expect = ["--expect-python", PYTHON_MINOR, "--expect-cloudpickle", CLOUDPICKLE_MAJOR]
    proc = run_runner(
        runner_file, "run", fn_path, args_path, tmp_path / "res.pkl", *expect, env={"SLURM_JOB_ID": "123"}
    )

    assert proc.returncode == 0, proc.stderr
    assert "progress on stdout" in proc.stdout
    assert "warning on stderr" in proc.stderr
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "value"
    assert cloudpickle.loads(outcome["value"]) == {"sum": 7}
    assert outcome["format"] == 1
    assert (outcome["exception"], outcome["exc_type"], outcome["traceback"]) == (None, "", "")
    assert outcome["python"] == platform.python_version()
    assert outcome["cloudpickle"] == cloudpickle.__version__
    assert (outcome["host"], outcome["rank"], outcome["job_id"], outcome["task"]) == (
        socket.gethostname(),
        0,
        "123",
        "",
    )


def test_exception_round_trip_with_traceback_from_the_function(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    def check(value: int) -> None:
        raise Boom(f"bad input {value}")

    def compute(value: int) -> None:
        check(value)

    fn_path, args_path = write_call(tmp_path, compute, 7)
    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "exception"
    assert outcome["exc_type"] == f"{__name__}.Boom"
    assert outcome["message"] == "bad input 7"
    assert "in compute" in outcome["traceback"] and "in check" in outcome["traceback"]
    assert "Boom: bad input 7" in outcome["traceback"]
    assert "_call" not in outcome["traceback"]  # the runner's own frame is left out
    exc = cloudpickle.loads(outcome["exception"])
    assert isinstance(exc, Boom) and exc.args == ("bad input 7",)


def test_unpicklable_return_value_is_reported_as_an_exception(tmp_path: Path, runner_file: Path) -> None:
    def make_lock() -> threading.Lock:
        return threading.Lock()

    fn_path, args_path = write_call(tmp_path, make_lock)
    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "exception"
    assert outcome["exc_type"] == "_pickle.PicklingError"
    assert "The return value of" in outcome["message"] and "make_lock" in outcome["message"]
    assert "_thread.lock" in outcome["message"] and "could not be pickled" in outcome["message"]
    assert isinstance(cloudpickle.loads(outcome["exception"]), pickle.PicklingError)


def test_system_exit_is_reported_but_not_shipped(tmp_path: Path, runner_file: Path) -> None:
    def leave() -> None:
        sys.exit(3)

    fn_path, args_path = write_call(tmp_path, leave)
    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert (outcome["kind"], outcome["exc_type"], outcome["message"]) == (
        "exception",
        "builtins.SystemExit",
        "3",
    )
    assert outcome["exception"] is None


def test_python_version_mismatch_names_both_versions_and_skips_the_call(
    tmp_path: Path, runner_file: Path
) -> None:
    marker = tmp_path / "called"
    fn_path, args_path = write_call(tmp_path, marker.touch)
    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl", "--expect-python", "2.7")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert "Python 2.7" in outcome["message"]
    assert f"Python {platform.python_version()}" in outcome["message"]
    assert "python=" in outcome["message"]
    assert not marker.exists()


def test_missing_cloudpickle_says_how_to_install_it(tmp_path: Path, runner_file: Path) -> None:
    isolated = ("-I", "-S")  # no site-packages: the standard library only, as on a bare cluster Python
    probe = subprocess.run([sys.executable, *isolated, "-c", "import cloudpickle"], capture_output=True)
    assert probe.returncode != 0, (
        "cloudpickle is importable without site-packages; this test needs it not to be"
    )
    marker = tmp_path / "called"
    fn_path, args_path = write_call(tmp_path, lambda: marker.touch())  # a lambda travels by value

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", "3"),
        python_flags=isolated,
    )

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert outcome["cloudpickle"] == ""
    message = outcome["message"]
    assert f"cloudpickle is not installed for {sys.executable}" in message
    assert f"Install cloudpickle 3.x for {sys.executable} on the cluster" in message
    assert f"`{sys.executable} -m pip install --user 'cloudpickle>=3,<4'`" in message
    assert "point `python=` at an interpreter that has it" in message
    assert not marker.exists()


def old_cloudpickle(directory: Path) -> Path:
    """A directory holding a cloudpickle 2.2.1 (its version only), to put first on PYTHONPATH."""
    fake = directory / "old-site" / "cloudpickle"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '2.2.1'\n")
    return fake.parent


def test_cloudpickle_major_mismatch_names_both_versions(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, lambda: None)

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", "3"),
        env={"PYTHONPATH": str(old_cloudpickle(tmp_path))},
    )

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert outcome["cloudpickle"] == "2.2.1"
    assert "cloudpickle 2.2.1" in outcome["message"] and "cloudpickle 3" in outcome["message"]
    assert "'cloudpickle>=3,<4'" in outcome["message"]


def importable_module(directory: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> ModuleType:
    """The module ``client_and_cluster`` of ``source`` in ``directory``, imported here.

    Its functions travel by reference, and the job side imports it when ``directory`` is on its
    PYTHONPATH.
    """
    (directory / "client_and_cluster.py").write_text(source)
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, "client_and_cluster", raising=False)
    return importlib.import_module("client_and_cluster")


def without_cloudpickle(directory: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """Python flags and environment for a job side that imports from ``directory`` but has no cloudpickle."""
    flags, env = ("-S",), {"PYTHONPATH": str(directory)}  # no site-packages
    probe = subprocess.run([sys.executable, *flags, "-c", "import cloudpickle"], env=env, capture_output=True)
    assert probe.returncode != 0, (
        "cloudpickle is importable without site-packages; this test needs it not to be"
    )
    return flags, env


def test_a_function_by_reference_runs_without_cloudpickle(
    tmp_path: Path, runner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importable_module(tmp_path, monkeypatch, "def double(x):\n    return {'twice': 2 * x}\n")
    fn_path, args_path = write_call(tmp_path, module.double, 21)
    flags, env = without_cloudpickle(tmp_path)

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", CLOUDPICKLE_MAJOR),
        python_flags=flags,
        env=env,
    )

    assert proc.returncode == 0, proc.stderr
    outcome = read_outcome(tmp_path / "res.pkl")
    assert (outcome["kind"], outcome["cloudpickle"]) == ("value", "")
    assert cloudpickle.loads(outcome["value"]) == {"twice": 42}


def test_a_value_only_cloudpickle_can_pickle_says_it_needs_cloudpickle(
    tmp_path: Path, runner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importable_module(tmp_path, monkeypatch, "def make():\n    return lambda: 1\n")
    fn_path, args_path = write_call(tmp_path, module.make)
    flags, env = without_cloudpickle(tmp_path)

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", CLOUDPICKLE_MAJOR),
        python_flags=flags,
        env=env,
    )

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    message = outcome["message"]
    assert message.startswith(
        "The return value of make (a function object) cannot be pickled by the standard"
    )
    assert "lambda" in message  # what the standard pickler said
    assert f"the job cannot use cloudpickle: cloudpickle is not installed for {sys.executable}" in message


def test_a_function_by_reference_does_not_care_for_the_cloudpickle_version(
    tmp_path: Path, runner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importable_module(tmp_path, monkeypatch, "def hello():\n    return 'hello'\n")
    fn_path, args_path = write_call(tmp_path, module.hello)

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", "3"),
        env={"PYTHONPATH": f"{old_cloudpickle(tmp_path)}:{tmp_path}"},
    )

    assert proc.returncode == 0, proc.stderr
    assert pickle.loads(read_outcome(tmp_path / "res.pkl")["value"]) == "hello"


# What the runner itself used to import for every task, and a trivial task by reference needs none of.
HEAVY_MODULES = (
    "argparse", "cloudpickle", "contextlib", "dataclasses", "inspect", "platform", "re", "socket",
    "tempfile", "traceback", "typing",
)  # fmt: skip


def test_a_trivial_task_by_reference_imports_nothing_heavy(
    tmp_path: Path, runner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "import sys\n\n\ndef loaded(names):\n    return sorted(set(names) & set(sys.modules))\n"
    module = importable_module(tmp_path, monkeypatch, source)
    fn_path, args_path = write_call(tmp_path, module.loaded, HEAVY_MODULES)
    expect = ["--expect-python", PYTHON_MINOR, "--expect-cloudpickle", CLOUDPICKLE_MAJOR]

    proc = run_runner(
        runner_file,
        "run",
        fn_path,
        args_path,
        tmp_path / "res.pkl",
        *expect,
        env={"PYTHONPATH": str(tmp_path)},
    )

    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"]) == []


@pytest.mark.parametrize("problem", ["missing", "garbage", "unimportable module"])
def test_unloadable_function_file_names_the_file_and_why(
    tmp_path: Path, runner_file: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    fn_path, args_path = write_call(tmp_path, print)
    expected = {
        "missing": "Could not read",
        "garbage": "Could not unpickle",
        "unimportable module": "not importable",
    }
    if problem == "missing":
        fn_path.unlink()
    elif problem == "garbage":
        fn_path.write_bytes(b"not a pickle")
    else:  # a function pickled by reference to a module the cluster does not have
        client_dir = tmp_path / "client"
        client_dir.mkdir()
        (client_dir / "client_only_module.py").write_text("def work():\n    return 1\n")
        monkeypatch.syspath_prepend(str(client_dir))
        monkeypatch.delitem(sys.modules, "client_only_module", raising=False)
        import client_only_module  # type: ignore[import-not-found]

        fn_path.write_bytes(cloudpickle.dumps(client_only_module.work))
        monkeypatch.delitem(sys.modules, "client_only_module")

    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert f"function file {fn_path}" in outcome["message"]
    assert expected[problem] in outcome["message"]


def test_arguments_that_are_not_an_args_kwargs_pair_are_reported(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, print)
    args_path.write_bytes(cloudpickle.dumps([1, 2, 3]))

    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert f"arguments file {args_path} does not hold an (args, kwargs) pair" in outcome["message"]


def test_task_placeholder_is_replaced_by_the_array_task_id(tmp_path: Path, runner_file: Path) -> None:
    fn_path, _ = write_call(tmp_path, lambda x: x * 2)
    (tmp_path / "args-5.pkl").write_bytes(cloudpickle.dumps(((21,), {})))
    argv = ("run", fn_path, tmp_path / "args-{task}.pkl", tmp_path / "res.{task}.pkl")

    proc = run_runner(runner_file, *argv, env={"SLURM_ARRAY_TASK_ID": "5"})

    assert proc.returncode == 0, proc.stderr
    outcome = read_outcome(tmp_path / "res.5.pkl")
    assert cloudpickle.loads(outcome["value"]) == 42
    assert outcome["task"] == "5"


def test_task_placeholder_without_an_array_task_id_is_a_usage_error(
    tmp_path: Path, runner_file: Path
) -> None:
    fn_path, args_path = write_call(tmp_path, print)

    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.{task}.pkl")

    assert proc.returncode == 2
    assert "SLURM_ARRAY_TASK_ID is not set" in proc.stderr
    assert list(tmp_path.glob("res*")) == []


def test_runner_directory_is_not_on_sys_path(tmp_path: Path, runner_file: Path) -> None:
    # Otherwise the workdir's fn/, jobs/ and results/ directories would shadow packages of those names.
    fn_path, args_path = write_call(tmp_path, lambda: [os.path.abspath(entry or ".") for entry in sys.path])

    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert str(runner_file.parent) not in cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"])
