"""Pickling calls for the job side and reading back the outcomes the runner writes."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch._errors import PayloadError, RemoteEnvironmentError, RemoteError
from slurmbatch.payload import (
    ArgumentStore,
    FunctionBlob,
    PackedCall,
    _builtin_size_bound,
    pack_argument_table,
    pack_arguments,
    pack_function,
    runner_digest,
    runner_source,
    unpack_outcome,
)
from slurmbatch.remote.bundle import runner_bundle


class Boom(Exception):
    """Raised on the job side; rebuilt on the client because this module is pickled by value."""


@pytest.fixture
def by_value() -> Iterator[None]:
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def outcome_bytes(**fields: Any) -> bytes:
    outcome = {
        "format": 1,
        "kind": "value",
        "value": None,
        "exception": None,
        "exc_type": "",
        "message": "",
        "traceback": "",
        "python": "3.11.2",
        "cloudpickle": "3.1.3",
        "host": "node1",
        "rank": 0,
        "job_id": "123",
        "task": "",
    }
    return pickle.dumps(outcome | fields, protocol=4)


def run_on_job_side(tmp_path: Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """Run one call through the real runner, as the batch script would, and return the result file."""
    blob = pack_function(fn)
    runner_path = tmp_path / f"runner-{runner_digest()[:12]}.py"
    runner_path.write_bytes(runner_source())
    (tmp_path / f"{blob.digest}.pkl").write_bytes(blob.data)
    (tmp_path / "args.pkl").write_bytes(pack_arguments(args, kwargs))
    argv = [
        "run",
        f"{blob.digest}.pkl",
        "args.pkl",
        "result.pkl",
        "--expect-python",
        f"{sys.version_info[0]}.{sys.version_info[1]}",
    ]
    subprocess.run([sys.executable, str(runner_path), *argv], cwd=tmp_path, capture_output=True, timeout=60)
    return (tmp_path / "result.pkl").read_bytes()


def test_pack_function_is_content_addressed() -> None:
    def scale(x: float) -> float:
        return x * 3

    blob = pack_function(scale)

    assert blob == pack_function(scale)
    assert blob.digest == hashlib.sha256(blob.data).hexdigest()
    assert blob.name == f"{__name__}.test_pack_function_is_content_addressed.<locals>.scale"
    assert cloudpickle.loads(blob.data)(2) == 6
    assert "data" not in repr(blob)
    assert isinstance(blob, FunctionBlob)


@pytest.mark.parametrize(
    ("make", "type_name"), [(threading.Lock, "_thread.lock"), (socket.socket, "socket.socket")]
)
def test_function_closing_over_an_unpicklable_object_is_refused_with_advice(
    make: Callable[[], Any], type_name: str
) -> None:
    resource = make()

    def use() -> Any:
        return resource

    try:
        with pytest.raises(PayloadError) as caught:
            pack_function(use)
    finally:
        if isinstance(resource, socket.socket):
            resource.close()

    message = str(caught.value)
    assert message.startswith(f"Cannot send the function {__name__}.")
    assert "<locals>.use to the job" in message
    assert f"the closure variable 'resource', a {type_name} object, which cannot be pickled" in message
    assert "Create that object inside the function" in message


def test_unpicklable_object_behind_a_nested_function_is_named() -> None:
    lock = threading.Lock()

    def helper() -> bool:
        return lock.locked()

    def work() -> bool:
        return helper()

    with pytest.raises(PayloadError, match=r"'lock' \(via the closure variable 'helper'\), a _thread.lock"):
        pack_function(work)


def test_pack_arguments_round_trips() -> None:
    data = pack_arguments((1, [2.5]), {"name": "x"})

    assert cloudpickle.loads(data) == ((1, [2.5]), {"name": "x"})


def test_unpicklable_arguments_are_named() -> None:
    with pytest.raises(PayloadError, match=r"Cannot send args\[1\] \(a _thread.lock object\)"):
        pack_arguments((1, threading.Lock()), {})
    with pytest.raises(PayloadError, match=r"Cannot send keyword argument 'guard' \(a _thread.lock object\)"):
        pack_arguments((1,), {"ok": 2, "guard": threading.Lock()})


def test_value_comes_back_through_the_runner(tmp_path: Path) -> None:
    assert unpack_outcome(run_on_job_side(tmp_path, lambda x, y: {"sum": x + y}, 2, y=3), job_id="7") == {
        "sum": 5
    }


def test_remote_exception_is_raised_as_its_own_type_with_the_remote_traceback(
    tmp_path: Path, by_value: None
) -> None:
    def fail(value: int) -> None:
        raise Boom(f"bad value {value}")

    data = run_on_job_side(tmp_path, fail, 9)

    with pytest.raises(Boom, match="bad value 9") as caught:
        unpack_outcome(data, job_id="7")
    remote_traceback = caught.value.remote_traceback  # type: ignore[attr-defined]
    assert "in fail" in remote_traceback and "Boom: bad value 9" in remote_traceback
    if sys.version_info >= (3, 11):
        [note] = caught.value.__notes__
        assert note.startswith(f"Remote traceback (job 7 on {socket.gethostname()}):\n")
        assert "in fail" in note


def test_exception_whose_class_is_missing_here_becomes_remote_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job_side_errors.py").write_text("class QuotaExceeded(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import job_side_errors  # type: ignore[import-not-found]

    exception = cloudpickle.dumps(job_side_errors.QuotaExceeded("over quota"))
    # Now the client no longer has the module, as when it only exists on the cluster.
    monkeypatch.delitem(sys.modules, "job_side_errors")
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(tmp_path)])
    data = outcome_bytes(
        kind="exception",
        exception=exception,
        exc_type="job_side_errors.QuotaExceeded",
        message="over quota",
        traceback="Traceback (most recent call last):\njob_side_errors.QuotaExceeded: over quota\n",
    )

    with pytest.raises(RemoteError) as caught:
        unpack_outcome(data, job_id="55")

    error = caught.value
    assert (error.exc_type, error.job_id) == ("job_side_errors.QuotaExceeded", "55")
    assert str(error).startswith("Job 55 on node1 raised job_side_errors.QuotaExceeded: over quota")
    assert "Remote traceback:\nTraceback (most recent call last):" in str(error)
    assert error.remote_traceback.endswith("QuotaExceeded: over quota\n")


def test_exception_that_cannot_be_rebuilt_from_its_args_becomes_remote_error(by_value: None) -> None:
    class NeedsTwo(Exception):
        def __init__(self, first: int, second: int) -> None:
            super().__init__(f"{first} and {second}")

    data = outcome_bytes(
        kind="exception",
        exception=cloudpickle.dumps(NeedsTwo(1, 2)),
        exc_type="m.NeedsTwo",
        message="1 and 2",
    )

    with pytest.raises(RemoteError, match=r"raised m\.NeedsTwo: 1 and 2"):
        unpack_outcome(data, job_id="1")


def test_system_exit_is_never_re_raised_on_the_client() -> None:
    data = outcome_bytes(
        kind="exception",
        exception=cloudpickle.dumps(SystemExit(3)),
        exc_type="builtins.SystemExit",
        message="3",
    )

    with pytest.raises(RemoteError, match=r"raised builtins\.SystemExit: 3"):
        unpack_outcome(data, job_id="1")


def test_environment_outcome_raises_remote_environment_error_with_the_runners_words() -> None:
    data = outcome_bytes(kind="environment", message="cloudpickle is not installed for /usr/bin/python3")

    with pytest.raises(RemoteEnvironmentError) as caught:
        unpack_outcome(data, job_id="88")

    assert (
        str(caught.value)
        == "Job 88 could not run the function on node1: cloudpickle is not installed for /usr/bin/python3"
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (outcome_bytes()[:-20], "truncated or corrupt"),
        (b"", "it is empty"),
        (pickle.dumps(["not", "an", "outcome"]), "known format"),
        (pickle.dumps(Path("/etc/passwd")), "refers to pathlib"),
        (outcome_bytes(message=b"bytes"), "its fields message are missing or of the wrong type"),
    ],
)
def test_damaged_result_file_is_a_payload_error_that_says_so(data: bytes, why: str) -> None:
    with pytest.raises(PayloadError) as caught:
        unpack_outcome(data, job_id="42")

    message = str(caught.value)
    assert message.startswith("The result file of job 42 is damaged (")
    assert why in message
    assert "The job is not rerun automatically" in message


def test_value_that_cannot_be_unpickled_here_is_a_payload_error() -> None:
    data = outcome_bytes(value=b"\x80\x04\x95\x00garbage")

    with pytest.raises(PayloadError, match="The return value of job 3 cannot be unpickled here"):
        unpack_outcome(data, job_id="3")


def test_runner_source_is_the_bundle_of_the_runner_modules() -> None:
    source = runner_bundle().encode()

    assert runner_source() == source
    assert runner_digest() == hashlib.sha256(source).hexdigest()


class Counted:
    """A large argument that counts how often it is pickled."""

    pickled = 0

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        type(self).pickled += 1
        return (Counted, (self.payload,))


@pytest.fixture
def counted(by_value: None) -> Iterator[type[Counted]]:
    Counted.pickled = 0
    yield Counted


def load_call(packed: PackedCall) -> Any:
    """Unpickle a call file as the runner does, resolving references from ``packed.blobs``."""

    class Resolving(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            tag, digest = pid
            assert tag == "slurmbatch.blob"
            return cloudpickle.loads(packed.blobs[digest])

    return Resolving(io.BytesIO(packed.data)).load()


def test_large_argument_passed_to_many_calls_is_pickled_once(counted: type[Counted]) -> None:
    store = ArgumentStore(threshold=1000)
    large = counted(b"x" * 5000)

    packed = [store.pack((large, i), {}) for i in range(3)]

    assert counted.pickled == 1
    [digest] = packed[0].blobs
    assert all(call.blobs == {digest: packed[0].blobs[digest]} for call in packed)
    assert digest == hashlib.sha256(packed[0].blobs[digest]).hexdigest()
    assert all(len(call.data) < 200 for call in packed)  # a reference, not the object
    args, kwargs = load_call(packed[2])
    assert (args[0].payload, args[1], kwargs) == (b"x" * 5000, 2, {})


def test_large_keyword_argument_is_referenced_too(counted: type[Counted]) -> None:
    store = ArgumentStore(threshold=1000)
    large = counted(b"k" * 5000)

    first = store.pack((), {"data": large, "n": 1})
    second = store.pack((1,), {"data": large})

    assert counted.pickled == 1
    assert first.blobs == second.blobs and len(first.blobs) == 1
    args, kwargs = load_call(second)
    assert (args, kwargs["data"].payload) == ((1,), b"k" * 5000)


def test_small_arguments_stay_inline_in_the_same_bytes_as_pack_arguments() -> None:
    store = ArgumentStore()
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, 2, 3), {}),
        ((1.5, "é" * 100, b"raw", None, True, -(2**100)), {"options": {"lr": 0.1, "layers": [64, 64]}}),
        (({1, 2}, frozenset("ab"), (1, (2, (3,)))), {}),
        ((lambda x: x, Path("/data")), {"n": 3}),  # not builtin: measured by pickling
    ]

    for args, kwargs in calls[:3]:
        packed = store.pack(args, kwargs)
        assert (packed.data, packed.blobs) == (pack_arguments(args, kwargs), {})
    packed = store.pack(*calls[3])
    assert packed.blobs == {}
    args, kwargs = cloudpickle.loads(packed.data)
    assert (args[0](7), args[1], kwargs) == (7, Path("/data"), {"n": 3})


def test_equal_large_arguments_share_one_digest() -> None:
    store = ArgumentStore(threshold=1000)

    first = store.pack((list(range(1000)),), {})
    second = store.pack((list(range(1000)),), {})

    assert first.blobs == second.blobs and len(first.blobs) == 1
    assert first.data == second.data


def test_same_large_argument_twice_in_one_call_is_one_reference(counted: type[Counted]) -> None:
    large = counted(b"x" * 5000)

    packed = ArgumentStore(threshold=1000).pack((large, large), {"again": large})

    assert (counted.pickled, len(packed.blobs)) == (1, 1)
    args, kwargs = load_call(packed)
    assert args[0].payload == kwargs["again"].payload == b"x" * 5000


def test_remembered_large_arguments_are_bounded(counted: type[Counted]) -> None:
    store = ArgumentStore(threshold=1000, remembered=2)
    first, second, third = counted(b"1" * 5000), counted(b"2" * 5000), counted(b"3" * 5000)

    for large in (first, second, first, third, first, second):
        store.pack((large,), {})

    # first stays remembered (recently used); second is forgotten when third comes, and pickled again.
    assert counted.pickled == 4


def test_remembered_large_arguments_are_bounded_in_bytes(counted: type[Counted]) -> None:
    store = ArgumentStore(threshold=1000, remembered_bytes=12_000)
    first, second, third = counted(b"1" * 5000), counted(b"2" * 5000), counted(b"3" * 5000)

    for large in (first, second, third, first):
        store.pack((large,), {})

    assert counted.pickled == 4


def test_argument_store_names_the_argument_that_cannot_be_pickled() -> None:
    store = ArgumentStore(threshold=1000)
    large = list(range(1000))

    with pytest.raises(PayloadError, match=r"Cannot send args\[1\] \(a _thread.lock object\)"):
        store.pack((large, threading.Lock()), {})
    with pytest.raises(PayloadError, match=r"Cannot send keyword argument 'guard' \(a _thread.lock object\)"):
        store.pack((1,), {"data": large, "guard": threading.Lock()})
    with pytest.raises(PayloadError, match=r"Cannot send args\[0\] \(a list object\)"):
        store.pack(([threading.Lock()] * 100,), {})


def test_argument_store_refuses_negative_limits() -> None:
    with pytest.raises(ValueError, match="must be 0 or more"):
        ArgumentStore(threshold=-1)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        2**64,
        -(2**13000),
        1.5,
        None,
        False,
        "",
        "\U0001f600\ud800" * 300,
        b"b" * 70_000,
        ["a" * 70_000, b"b" * 70_000, "c" * 200_000],
        {"key": [1, 2.5, (None, "x")], "other": {3, 4}},
        (),
    ],
    ids=lambda value: f"{type(value).__name__}-{len(cloudpickle.dumps(value))}-bytes",
)
def test_cheap_size_bound_of_builtin_values_is_an_upper_bound(value: Any) -> None:
    bound = _builtin_size_bound(value, 1 << 30)

    assert bound is not None and bound >= len(cloudpickle.dumps(value))


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (Path("/x"), 1 << 30),
        ([1, Path("/x")], 1 << 30),
        (list(range(100)), 1 << 30),
        ("x" * 100, 100),
        (True, 30),
    ],
)
def test_cheap_size_bound_gives_up_on_other_values_too_many_items_or_past_the_limit(
    value: Any, limit: int
) -> None:
    assert _builtin_size_bound(value, limit) is None


def run_packed_on_job_side(
    tmp_path: Path, fn: Callable[..., Any], packed: PackedCall, *, task: int | None = None
) -> bytes:
    """Run ``packed`` through the runner, on its own or as entry ``task`` of a job array's table."""
    blob = pack_function(fn)
    runner_path = tmp_path / f"runner-{runner_digest()[:12]}.py"
    runner_path.write_bytes(runner_source())
    functions = tmp_path / "fn"
    functions.mkdir(exist_ok=True)
    (functions / f"{blob.digest}.pkl").write_bytes(blob.data)
    for digest, data in packed.blobs.items():
        (functions / f"{digest}.pkl").write_bytes(data)
    argv = ["run", f"fn/{blob.digest}.pkl", "args.pkl", "result.pkl"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    if task is None:
        (tmp_path / "args.pkl").write_bytes(packed.data)
    else:
        calls = [pack_arguments((), {})] * task + [packed.data]
        (tmp_path / "args.pkl").write_bytes(pack_argument_table(calls))
        argv.append("--packed")
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    subprocess.run(
        [sys.executable, str(runner_path), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    return (tmp_path / "result.pkl").read_bytes()


@pytest.mark.parametrize("task", [None, 3])
def test_large_arguments_come_back_through_the_runner(
    tmp_path: Path, counted: type[Counted], task: int | None
) -> None:
    store = ArgumentStore(threshold=1000)
    large = counted(b"x" * 5000)
    packed = store.pack((large, 2), {"again": large, "tail": list(range(2000))})

    def work(data: Counted, n: int, again: Counted, tail: list[int]) -> tuple[int, bool, int]:
        return len(data.payload) * n, again is data, sum(tail)

    assert unpack_outcome(run_packed_on_job_side(tmp_path, work, packed, task=task), job_id="7") == (
        10_000,
        True,
        1999 * 1000,
    )


def test_missing_large_argument_on_the_job_side_is_an_environment_error(tmp_path: Path) -> None:
    packed = ArgumentStore(threshold=1000).pack((list(range(1000)),), {})
    [digest] = packed.blobs

    result = run_packed_on_job_side(tmp_path, len, PackedCall(packed.data, {}))

    with pytest.raises(RemoteEnvironmentError) as caught:
        unpack_outcome(result, job_id="9")
    assert f"Could not read the large-argument file fn/{digest}.pkl: No such file or directory" in str(
        caught.value
    )


def test_argument_table_layout() -> None:
    calls = [b"first", b"", b"third entry"]

    table = pack_argument_table(calls)

    magic, version, count = struct.unpack_from("<6sHQ", table)
    assert (magic, version, count) == (b"SBARGS", 1, 3)
    slots = [struct.unpack_from("<QQ", table, 16 + 16 * i) for i in range(3)]
    assert slots == [(64, 5), (69, 0), (69, 11)]
    assert [table[offset : offset + length] for offset, length in slots] == calls
    assert len(table) == 80
    assert pack_argument_table([]) == struct.pack("<6sHQ", b"SBARGS", 1, 0)


def test_packing_ten_thousand_entries_takes_milliseconds() -> None:
    calls = [pack_arguments((i, i + 1, i + 2), {}) for i in range(10_000)]

    took = min(timeit.repeat(lambda: pack_argument_table(calls), number=1, repeat=5))

    assert took < 0.05


def test_an_argument_over_the_size_limit_is_refused_by_name() -> None:
    store = ArgumentStore(threshold=1024, max_bytes=100_000)
    store.pack((b"x" * 50_000,), {})  # under the limit: fine
    with pytest.raises(
        PayloadError, match=r"Cannot send keyword argument 'table'.*max_argument_bytes=100000"
    ):
        store.pack((), {"table": b"x" * 200_000})
