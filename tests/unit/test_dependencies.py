"""Futures as arguments, in their pure parts: pickling them, grouping dependants, the job side's reading."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch._dependencies import dependency_option
from slurmbatch._job_groups import array_task, group_jobs
from slurmbatch._submit_requests import SubmitRequest
from slurmbatch.future import JobFuture, RemoteValue
from slurmbatch.payload import ArgumentStore, FunctionBlob, PackedCall, unpack_outcome
from slurmbatch.remote.upstream import UPSTREAM_REFERENCE, VALUE_FILE_THRESHOLD
from slurmbatch.spec import JobSpec

from .runner_support import read_outcome, run_runner, write_call


def future(job_id: str, token: str | None = None) -> JobFuture[Any]:
    return JobFuture(None, job_id=job_id, token=token or f"sb-{job_id}")  # type: ignore[arg-type]


class Upstreams:
    """What the session does for a call's futures: a reference to each one's files, noted."""

    def __init__(self) -> None:
        self.seen: list[JobFuture[Any]] = []

    def future_of(self, obj: object) -> JobFuture[Any] | None:
        return obj if isinstance(obj, JobFuture) else None

    def reference(self, upstream: JobFuture[Any]) -> tuple[str, str, str, str]:
        self.seen.append(upstream)
        return (UPSTREAM_REFERENCE, upstream.job_id, f"/r/{upstream.token}.pkl", f"/v/{upstream.token}.pkl")


class Box:
    def __init__(self, content: object) -> None:
        self.content = content


class References(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        return pid


def load_references(call: PackedCall) -> Any:
    return References(io.BytesIO(call.data)).load()


def test_futures_anywhere_in_the_arguments_become_references() -> None:
    a, b, c, d, e = (future(str(n)) for n in range(1, 6))
    upstreams = Upstreams()
    call = ArgumentStore().pack((a, [b, (c,)]), {"d": {"x": d}, "e": {e}}, upstreams)
    assert [f.job_id for f in upstreams.seen] == ["1", "2", "3", "4", "5"]
    args, kwargs = load_references(call)
    assert args[0] == (UPSTREAM_REFERENCE, "1", "/r/sb-1.pkl", "/v/sb-1.pkl")
    assert args[1][1][0][1] == "3"
    assert kwargs["d"]["x"][1] == "4"
    assert next(iter(kwargs["e"]))[1] == "5"


def test_a_large_argument_that_holds_a_future_stays_in_the_call() -> None:
    upstreams = Upstreams()
    large = Box([future("7"), b"x" * 100_000])
    call = ArgumentStore(threshold=1024).pack((large,), {}, upstreams)
    assert not call.blobs  # not uploaded on its own: its future must become a reference in the call
    (box,), _ = load_references(call)
    assert box.content[0][1] == "7"


def test_a_large_argument_without_futures_is_still_uploaded_once() -> None:
    call = ArgumentStore(threshold=1024).pack((b"y" * 10_000,), {}, Upstreams())
    assert len(call.blobs) == 1


def test_dependency_option() -> None:
    assert dependency_option([]) is None
    assert dependency_option(["12", "9_3", "12", "15;cluster"]) == "afterok:12:15:9_3"
    assert array_task("9_3") == ("9", 3)
    assert array_task("9") is None
    assert array_task("9_3;cluster") == ("9", 3)


def requests(upstreams: list[tuple[JobFuture[Any], ...]], spec: JobSpec | None = None) -> list[SubmitRequest]:
    blob = FunctionBlob(data=b"", digest="0" * 64, name="f")
    return [SubmitRequest(blob, PackedCall(b"", {}), spec or JobSpec(), upstream=u) for u in upstreams]


def groups(batch: list[SubmitRequest]) -> list[tuple[int, int | None, str | None]]:
    tokens = iter(f"sb-{n}" for n in range(1000))
    jobs = group_jobs(batch, max_array_size=1001, new_token=lambda: next(tokens))
    return sorted(
        ((len(j.requests), j.array.size if j.array else None, j.dependency) for j in jobs),
        key=lambda g: (g[2] or "", g[0]),
    )


def test_a_map_over_the_tasks_of_an_array_is_one_array_with_aftercorr() -> None:
    batch = requests([(future(f"40_{i}"),) for i in (2, 0, 1)])
    jobs = list(group_jobs(batch, max_array_size=1001, new_token=lambda: "sb-x"))
    assert len(jobs) == 1
    assert jobs[0].dependency == "aftercorr:40"
    # Task i of the new array is the call on task i of the upstream array.
    assert [r.upstream[0].job_id for r in jobs[0].requests] == ["40_0", "40_1", "40_2"]


def test_calls_on_some_tasks_only_wait_each_for_its_own() -> None:
    batch = requests([(future("40_1"),), (future("40_3"),)])
    assert groups(batch) == [(1, None, "afterok:40_1"), (1, None, "afterok:40_3")]


def test_calls_waiting_for_the_same_jobs_share_an_array_and_others_do_not() -> None:
    a, b = future("50"), future("51")
    batch = requests([(a,), (a,), (a, b), (b, a), (), ()])
    assert groups(batch) == [(2, 2, None), (2, 2, "afterok:50"), (2, 2, "afterok:50:51")]


def test_uncoalesced_calls_keep_their_own_dependency() -> None:
    batch = requests([(future("40_0"),), (future("40_1"),)], JobSpec(coalesce=False))
    assert groups(batch) == [(1, None, "afterok:40_0"), (1, None, "afterok:40_1")]


def test_a_large_value_goes_to_its_own_file(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, bytes, VALUE_FILE_THRESHOLD)
    result, value = tmp_path / "res.pkl", tmp_path / "value.pkl"
    proc = run_runner(runner_file, "run", fn_path, args_path, result, "--value-file", value)
    assert proc.returncode == 0, proc.stderr
    outcome = read_outcome(result)
    assert outcome["value"] is None and outcome["value_file"] == str(value)
    assert cloudpickle.loads(value.read_bytes()) == bytes(VALUE_FILE_THRESHOLD)
    assert unpack_outcome(result.read_bytes(), job_id="1") == RemoteValue(str(value), outcome["value_size"])


def test_a_small_value_stays_in_the_outcome(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, bytes, 10)
    result, value = tmp_path / "res.pkl", tmp_path / "value.pkl"
    run_runner(runner_file, "run", fn_path, args_path, result, "--value-file", value)
    assert not value.exists()
    assert unpack_outcome(result.read_bytes(), job_id="1") == bytes(10)


def upstream_job(
    tmp_path: Path, runner_file: Path, name: str, fn: Any, *args: Any
) -> tuple[str, str, str, str]:
    """Run ``fn(*args)`` as an upstream job; the reference a dependant's call holds to it."""
    directory = tmp_path / name
    directory.mkdir()
    fn_path, args_path = write_call(directory, fn, *args)
    result, value = directory / "res.pkl", directory / "value.pkl"
    run_runner(runner_file, "run", fn_path, args_path, result, "--value-file", value)
    return (UPSTREAM_REFERENCE, name, str(result), str(value))


def run_dependant(tmp_path: Path, runner_file: Path, fn: Any, *references: Any) -> dict[str, Any]:
    class Referring(cloudpickle.Pickler):  # type: ignore[misc]
        def persistent_id(self, obj: object) -> Any:
            return obj if isinstance(obj, tuple) and obj[:1] == (UPSTREAM_REFERENCE,) else None

    directory = tmp_path / "dependant"
    directory.mkdir()
    fn_path, args_path = write_call(directory, fn)
    file = io.BytesIO()
    Referring(file).dump(([list(references)], {}))
    args_path.write_bytes(file.getvalue())
    run_runner(runner_file, "run", fn_path, args_path, directory / "res.pkl")
    return read_outcome(directory / "res.pkl")


def test_the_job_side_reads_upstream_values_from_their_files(tmp_path: Path, runner_file: Path) -> None:
    large = upstream_job(tmp_path, runner_file, "101", bytes, VALUE_FILE_THRESHOLD * 2)
    small = upstream_job(tmp_path, runner_file, "102", len, "abc")
    outcome = run_dependant(tmp_path, runner_file, lambda values: [len(values[0]), values[1]], large, small)
    assert outcome["kind"] == "value", outcome["message"]
    assert cloudpickle.loads(outcome["value"]) == [VALUE_FILE_THRESHOLD * 2, 3]


def fail() -> None:
    raise KeyError("gone")


@pytest.mark.parametrize("remove", [False, True])
def test_an_upstream_without_a_value_is_an_environment_outcome(
    tmp_path: Path, runner_file: Path, remove: bool
) -> None:
    reference = upstream_job(tmp_path, runner_file, "103", fail)
    if remove:
        Path(reference[2]).unlink()
    outcome = run_dependant(tmp_path, runner_file, len, reference)
    assert outcome["kind"] == "environment"
    said = "left no result" if remove else "did not return a value: 'gone'"
    assert f"Upstream job 103 {said}" in outcome["message"]
