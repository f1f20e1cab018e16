"""The arguments of a call as the runner reads them: packed tables of job arrays and large arguments."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch.payload import pack_argument_table
from slurmbatch.remote import table as argument_table

from .runner_support import read_outcome, run_runner, write_call


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

    assert argument_table.read_table_entry(file, "table.pkl", "321") == (321, calls[321])
    header, slot = argument_table.ARGUMENT_TABLE_HEADER.size, argument_table.ARGUMENT_TABLE_SLOT.size
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


HEADER = argument_table.ARGUMENT_TABLE_HEADER


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
