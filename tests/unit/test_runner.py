"""The job-side runner, run for real as a subprocess of this Python, as a batch script would run it."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import pickle
import platform
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch.payload import pack_argument_table
from slurmbatch.remote import runner

PYTHON_MINOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
CLOUDPICKLE_MAJOR = cloudpickle.__version__.split(".")[0]


class Boom(Exception):
    """An exception class the job side only knows because this module is pickled by value."""


@pytest.fixture
def by_value() -> Iterator[None]:
    """Pickle this module's classes by value, as cloudpickle does for a user's ``__main__``."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture
def runner_file(tmp_path: Path) -> Path:
    """The runner copied out of the package, so it runs on its own like the uploaded copy."""
    path = tmp_path / "runner-0123456789ab.py"
    shutil.copyfile(runner.__file__, path)
    return path


def write_call(directory: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Path, Path]:
    fn_path, args_path = directory / "fn.pkl", directory / "args.pkl"
    fn_path.write_bytes(cloudpickle.dumps(fn))
    args_path.write_bytes(cloudpickle.dumps((args, kwargs)))
    return fn_path, args_path


def run_runner(
    runner_path: Path,
    *argv: str | Path,
    env: Mapping[str, str] = {},
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    return subprocess.run(
        [sys.executable, *python_flags, str(runner_path), *map(str, argv)],
        env=clean | dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,  # the 0600 mode must come from the runner, not from a strict umask
    )


def read_outcome(path: Path) -> dict[str, Any]:
    outcome = pickle.loads(path.read_bytes())
    assert isinstance(outcome, dict)
    return outcome


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
    fn_path, args_path = write_call(tmp_path, print)

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


def test_cloudpickle_major_mismatch_names_both_versions(tmp_path: Path, runner_file: Path) -> None:
    fake = tmp_path / "old-site" / "cloudpickle"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '2.2.1'\n")
    fn_path, args_path = write_call(tmp_path, print)

    proc = run_runner(
        runner_file,
        *("run", fn_path, args_path, tmp_path / "res.pkl", "--expect-cloudpickle", "3"),
        env={"PYTHONPATH": str(fake.parent)},
    )

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert outcome["cloudpickle"] == "2.2.1"
    assert "cloudpickle 2.2.1" in outcome["message"] and "cloudpickle 3" in outcome["message"]
    assert "'cloudpickle>=3,<4'" in outcome["message"]


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


def rank_value(scale: int, failing_ranks: tuple[int, ...] = ()) -> int:
    rank = int(os.environ["SLURM_PROCID"])
    if rank in failing_ranks:
        raise Boom(f"rank {rank} failed")
    return rank * scale + 100


def run_ranks(
    runner_path: Path, directory: Path, ranks: list[int], *args: Any
) -> tuple[Path, Path, list[subprocess.CompletedProcess[str]]]:
    fn_path, args_path = write_call(directory, rank_value, *args)
    rank_dir = directory / "ranks"
    rank_dir.mkdir()
    result = directory / "res.pkl"
    procs = [
        run_runner(
            runner_path,
            "run",
            fn_path,
            args_path,
            result,
            "--rank-dir",
            rank_dir,
            env={"SLURM_PROCID": str(r)},
        )
        for r in ranks
    ]
    return rank_dir, result, procs


def test_ranks_write_their_own_files_and_gather_keeps_rank_0(
    tmp_path: Path, runner_file: Path, by_value: None
) -> None:
    rank_dir, result, procs = run_ranks(runner_file, tmp_path, [0, 1, 2], 10)

    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert not result.exists()  # only gather writes the result file
    assert sorted(os.listdir(rank_dir)) == ["rank-0.pkl", "rank-1.pkl", "rank-2.pkl"]
    assert read_outcome(rank_dir / "rank-2.pkl")["value"] is None  # only rank 0 ships its value
    assert read_outcome(rank_dir / "rank-2.pkl")["rank"] == 2

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "3")

    assert proc.returncode == 0
    outcome = read_outcome(result)
    assert (outcome["kind"], outcome["rank"]) == ("value", 0)
    assert cloudpickle.loads(outcome["value"]) == 100


def test_gather_reports_the_first_failing_rank(tmp_path: Path, runner_file: Path, by_value: None) -> None:
    rank_dir, result, procs = run_ranks(runner_file, tmp_path, [0, 1, 2], 10, (2, 1))
    assert [proc.returncode for proc in procs] == [0, 1, 1]

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "3")

    assert proc.returncode == 1
    outcome = read_outcome(result)
    assert (outcome["kind"], outcome["rank"], outcome["message"]) == ("exception", 1, "rank 1 failed")


def test_gather_names_the_ranks_that_wrote_nothing(tmp_path: Path, runner_file: Path, by_value: None) -> None:
    rank_dir, result, _ = run_ranks(runner_file, tmp_path, [0, 2], 10)

    proc = run_runner(runner_file, "gather", result, "--rank-dir", rank_dir, "--ntasks", "4")

    assert proc.returncode == 1
    outcome = read_outcome(result)
    assert outcome["kind"] == "exception"
    assert outcome["exception"] is None
    assert f"Rank(s) 1, 3 of 4 wrote no outcome to {rank_dir}" in outcome["message"]


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


def test_result_replaces_an_old_file_atomically_with_mode_0600(tmp_path: Path, runner_file: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    result = results / "sb-0123456789abcdef.pkl"
    result.write_bytes(b"stale")
    result.chmod(0o644)
    fn_path, args_path = write_call(tmp_path, lambda: "fresh")

    proc = run_runner(runner_file, "run", fn_path, args_path, result)

    assert proc.returncode == 0, proc.stderr
    assert os.listdir(results) == [result.name]  # no temporary file left behind
    assert stat.S_IMODE(result.stat().st_mode) == 0o600
    assert cloudpickle.loads(read_outcome(result)["value"]) == "fresh"


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, runner_file: Path) -> None:
    results = tmp_path / "results"
    (results / "res.pkl").mkdir(parents=True)  # a directory where the result should go: the rename fails
    fn_path, args_path = write_call(tmp_path, lambda: 1)

    proc = run_runner(runner_file, "run", fn_path, args_path, results / "res.pkl")

    assert proc.returncode != 0
    assert os.listdir(results) == ["res.pkl"]


def test_runner_directory_is_not_on_sys_path(tmp_path: Path, runner_file: Path) -> None:
    # Otherwise the workdir's fn/, jobs/ and results/ directories would shadow packages of those names.
    fn_path, args_path = write_call(tmp_path, lambda: [os.path.abspath(entry or ".") for entry in sys.path])

    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert str(runner_file.parent) not in cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"])


def test_runner_is_python_3_8_and_needs_only_the_standard_library_and_cloudpickle() -> None:
    tree = ast.parse(Path(runner.__file__).read_text(), feature_version=(3, 8))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) == {"cloudpickle"}


def write_table(directory: Path, *calls: tuple[tuple[Any, ...], dict[str, Any]]) -> Path:
    """The packed argument file of a job array whose task ``i`` makes call ``calls[i]``."""
    path = directory / "array.args.pkl"
    path.write_bytes(pack_argument_table([cloudpickle.dumps(call) for call in calls]))
    return path


def run_task(runner_path: Path, fn_path: Path, table: Path, task: str | None, result: Path) -> dict[str, Any]:
    env = {} if task is None else {"SLURM_ARRAY_TASK_ID": task}
    run_runner(runner_path, "run", fn_path, table, result, "--packed", env=env)
    return read_outcome(result)


def test_each_array_task_runs_its_own_entry_of_the_packed_table(tmp_path: Path, runner_file: Path) -> None:
    fn_path, _ = write_call(tmp_path, lambda x, scale=1: x * scale)
    table = write_table(tmp_path, ((1,), {}), ((2,), {"scale": 10}), ((3,), {}), (("ab",), {"scale": 2}))

    for task, expected in [("0", 1), ("1", 20), ("3", "abab")]:
        argv = ("run", fn_path, table, tmp_path / "res.{task}.pkl", "--packed")
        proc = run_runner(runner_file, *argv, env={"SLURM_ARRAY_TASK_ID": task})

        assert proc.returncode == 0, proc.stderr
        outcome = read_outcome(tmp_path / f"res.{task}.pkl")
        assert (cloudpickle.loads(outcome["value"]), outcome["task"]) == (expected, task)


def test_a_task_reads_only_its_own_entry(tmp_path: Path, runner_file: Path) -> None:
    fn_path, _ = write_call(tmp_path, lambda x: x + 1)
    calls = [cloudpickle.dumps(((i,), {})) for i in range(3)]
    data = bytearray(pack_argument_table(calls))
    start = data.index(calls[1], len(data) - sum(map(len, calls)))
    data[start : start + len(calls[1])] = b"\xff" * len(calls[1])  # entry 1 is garbage now
    (table := tmp_path / "table.pkl").write_bytes(data)

    assert cloudpickle.loads(run_task(runner_file, fn_path, table, "2", tmp_path / "r2.pkl")["value"]) == 3
    assert cloudpickle.loads(run_task(runner_file, fn_path, table, "0", tmp_path / "r0.pkl")["value"]) == 1
    damaged = run_task(runner_file, fn_path, table, "1", tmp_path / "r1.pkl")
    assert damaged["kind"] == "environment"
    assert f"Could not unpickle entry 1 of the packed arguments file {table}" in damaged["message"]


def test_reading_an_entry_reads_the_header_its_slot_and_the_entry_only() -> None:
    class CountingReads(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.read_sizes: list[int] = []

        def read(self, size: int | None = -1, /) -> bytes:
            data = super().read(size)
            self.read_sizes.append(len(data))
            return data

    calls = [i.to_bytes(2, "little") * (500 + i) for i in range(500)]
    file = CountingReads(pack_argument_table(calls))

    assert runner.read_table_entry(file, "table.pkl", "321") == (321, calls[321])
    header, slot = runner.ARGUMENT_TABLE_HEADER.size, runner.ARGUMENT_TABLE_SLOT.size
    assert file.read_sizes == [header, slot, len(calls[321])]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (None, "packs the calls of a job array, but SLURM_ARRAY_TASK_ID is not set"),
        ("", "packs the calls of a job array, but SLURM_ARRAY_TASK_ID is not set"),
        (
            "2",
            "This is array task 2, but the packed arguments file {table} holds calls for tasks 0 to 1 only",
        ),
        ("-1", "This is array task -1, but"),
        ("one", "This is array task one, but"),
    ],
)
def test_task_id_missing_or_outside_the_table_is_an_environment_outcome(
    tmp_path: Path, runner_file: Path, task: str | None, message: str
) -> None:
    marker = tmp_path / "called"
    fn_path, _ = write_call(tmp_path, lambda _: marker.touch())
    table = write_table(tmp_path, ((0,), {}), ((1,), {}))

    outcome = run_task(runner_file, fn_path, table, task, tmp_path / "res.pkl")

    assert outcome["kind"] == "environment"
    assert message.format(table=table) in outcome["message"]
    assert not marker.exists()


def _rewrite(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


HEADER = runner.ARGUMENT_TABLE_HEADER


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda table: b"", "is not a packed argument table"),
        (lambda table: table[: HEADER.size - 1], "is not a packed argument table"),
        (lambda table: cloudpickle.dumps(((1,), {})), "is not a packed argument table"),
        (
            lambda table: _rewrite(table, 6, struct.pack("<H", 9)),
            "has table format 9, but this runner reads only",
        ),
        (
            lambda table: _rewrite(table, 8, struct.pack("<Q", 10**9)),
            "its header announces 1000000000 entries, but the file",
        ),
        (
            lambda table: _rewrite(table, HEADER.size, struct.pack("<QQ", 3, 20)),
            "entry 0 is said to span bytes 3 to 23, outside the entries",
        ),
        (lambda table: table[:-1], "entry 0 is said to span bytes"),
    ],
)
def test_damaged_packed_table_is_an_environment_outcome(
    tmp_path: Path, runner_file: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    fn_path, _ = write_call(tmp_path, print)
    table = write_table(tmp_path, (("only",), {}))
    table.write_bytes(damage(table.read_bytes()))

    outcome = run_task(runner_file, fn_path, table, "0", tmp_path / "res.pkl")

    assert outcome["kind"] == "environment"
    assert str(table) in outcome["message"] and message in outcome["message"]


class ReferringPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """Writes the wire form of a reference to a large argument, as the client's ArgumentStore does."""

    def __init__(self, file: io.BytesIO, references: dict[int, str]) -> None:
        super().__init__(file)
        self.references = references

    def persistent_id(self, obj: object) -> tuple[str, str] | None:
        digest = self.references.get(id(obj))
        return None if digest is None else ("slurmbatch.blob", digest)


def write_referring_call(
    path: Path, blob_dir: Path, large: object, *args: Any, **kwargs: Any
) -> tuple[str, Path]:
    """Write a call file referring to ``large`` (an argument), and ``large`` to ``blob_dir/<digest>.pkl``."""
    data = cloudpickle.dumps(large)
    digest = hashlib.sha256(data).hexdigest()
    (blob_dir / f"{digest}.pkl").write_bytes(data)
    file = io.BytesIO()
    ReferringPickler(file, {id(large): digest}).dump((args, kwargs))
    path.write_bytes(file.getvalue())
    return digest, blob_dir / f"{digest}.pkl"


def test_large_arguments_are_loaded_from_the_function_directory_once(
    tmp_path: Path, runner_file: Path
) -> None:
    functions, jobs = tmp_path / "fn", tmp_path / "jobs"
    functions.mkdir()
    jobs.mkdir()
    fn_path, _ = write_call(functions, lambda data, n, again: (sum(data) * n, again is data))
    large = list(range(1000))
    write_referring_call(jobs / "args.pkl", functions, large, large, 2, again=large)

    proc = run_runner(runner_file, "run", fn_path, jobs / "args.pkl", tmp_path / "res.pkl")

    assert proc.returncode == 0, proc.stderr
    # One object per digest on the job side too: the same argument twice stays the same object.
    assert cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"]) == (999_000, True)


def test_missing_large_argument_is_an_environment_outcome_naming_its_file(
    tmp_path: Path, runner_file: Path
) -> None:
    fn_path, args_path = write_call(tmp_path, len)
    large = b"y" * 100
    _, blob = write_referring_call(args_path, tmp_path, large, large)
    blob.unlink()

    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 1
    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert f"Could not read the large-argument file {blob}: No such file or directory" in outcome["message"]


@pytest.mark.parametrize(
    "reference", [("slurmbatch.blob", "../../etc/passwd"), ("other", "0" * 64), "0" * 64]
)
def test_reference_that_is_not_a_digest_is_refused(tmp_path: Path, runner_file: Path, reference: Any) -> None:
    class Refer(cloudpickle.Pickler):  # type: ignore[misc]
        def persistent_id(self, obj: object) -> Any:
            return reference if obj == "placeholder" else None

    fn_path, args_path = write_call(tmp_path, print)
    file = io.BytesIO()
    Refer(file).dump((("placeholder",), {}))
    args_path.write_bytes(file.getvalue())

    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    outcome = read_outcome(tmp_path / "res.pkl")
    assert outcome["kind"] == "environment"
    assert f"Could not unpickle the arguments file {args_path}" in outcome["message"]
    assert "which is not to a large argument" in outcome["message"]
