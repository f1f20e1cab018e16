"""Pickling calls for the job side and reading back the outcomes the runner writes."""

from __future__ import annotations

import hashlib
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from slurmbatch._errors import PayloadError, RemoteEnvironmentError, RemoteError
from slurmbatch.payload import (
    FunctionBlob,
    pack_arguments,
    pack_function,
    runner_digest,
    runner_source,
    unpack_outcome,
)
from slurmbatch.remote import runner


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


def test_runner_source_is_the_runner_module_file() -> None:
    source = Path(runner.__file__).read_bytes()

    assert runner_source() == source
    assert runner_digest() == hashlib.sha256(source).hexdigest()
