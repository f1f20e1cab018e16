"""What Covalent passes to run(), unwrapped for a node without covalent, and the output wrapped back."""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any

import cloudpickle
import pytest

ct = pytest.importorskip("covalent")

from covalent._workflow.depscall import DepsCall  # noqa: E402
from covalent._workflow.transportable_object import TransportableObject  # noqa: E402
from covalent.executor.utils.wrappers import wrapper_fn  # noqa: E402

from slurmbatch_covalent._payload import unwrap, wrap_output  # noqa: E402

pytestmark = pytest.mark.covalent

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Point:
    """A user class: the server need not import it to hold a task's output."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


def scale(point: Point, factor: float = 1.0, *, offset: float = 0.0, setup: Any = None) -> Point:
    return Point(point.x * factor + offset, point.y * factor + (setup or 0))


def give(value: Any) -> Any:
    return value


def covalent_call(
    fn: Any, args: list[Any], kwargs: dict[str, Any], call_before: list[Any] = (), call_after: list[Any] = ()
) -> tuple[Any, list[Any], dict[str, Any]]:
    """What Covalent's runner passes to run(): partial(wrapper_fn, ...) and TransportableObjects."""
    function = functools.partial(wrapper_fn, TransportableObject(fn), list(call_before), list(call_after))
    return (
        function,
        [TransportableObject(arg) for arg in args],
        {key: TransportableObject(value) for key, value in kwargs.items()},
    )


def on_the_node(call: Any) -> Any:
    """Run the unwrapped call as the node does: from cloudpickle bytes, in a fresh namespace."""
    fn = cloudpickle.loads(cloudpickle.dumps(call.fn))
    args, kwargs = cloudpickle.loads(cloudpickle.dumps((call.args, call.kwargs)))
    return fn(*args, **kwargs)


def test_unwrapped_task_gives_what_wrapper_fn_gives() -> None:
    function, args, kwargs = covalent_call(scale, [Point(1, 2), 3.0], {"offset": 1.0})
    expected = function(*args, **kwargs)
    call = unwrap(function, args, kwargs)
    assert call.covalent_task
    output = wrap_output(on_the_node(call))
    assert isinstance(output, TransportableObject)
    assert output.get_deserialized() == expected.get_deserialized() == Point(4.0, 6.0)
    assert output.object_string == "Point(4.0, 6.0)"
    assert output.python_version == expected.python_version
    assert set(vars(output)) == set(vars(expected))


def test_call_before_values_reach_the_function_and_call_after_runs() -> None:
    before = DepsCall(give, args=[10.0], retval_keyword="setup").apply()
    after = DepsCall(give, args=["done"]).apply()
    function, args, kwargs = covalent_call(scale, [Point(1, 2)], {}, [before], [after])
    expected = function(*args, **kwargs).get_deserialized()
    assert (
        wrap_output(on_the_node(unwrap(function, args, kwargs))).get_deserialized()
        == expected
        == Point(1, 12)
    )


def test_a_plain_function_is_submitted_as_it_is() -> None:
    call = unwrap(scale, [Point(1, 1)], {"factor": 2.0})
    assert not call.covalent_task
    assert on_the_node(call) == Point(2.0, 2.0)


def test_the_node_needs_neither_covalent_nor_slurmbatch(tmp_path: Any) -> None:
    function, args, kwargs = covalent_call(sum, [[1, 2, 3]], {})
    call = unwrap(function, args, kwargs)
    payload = tmp_path / "call.pkl"
    payload.write_bytes(cloudpickle.dumps((call.fn, call.args, call.kwargs)))
    node = (
        "import sys, pickle\n"
        # Anything that imports covalent or slurmbatch now fails, as on a bare compute node.
        "for name in ('covalent', 'slurmbatch', 'slurmbatch_covalent'): sys.modules[name] = None\n"
        f"fn, args, kwargs = pickle.load(open({str(payload)!r}, 'rb'))\n"
        "print(pickle.dumps(fn(*args, **kwargs)).hex())\n"
    )
    done = subprocess.run([sys.executable, "-c", node], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    output = wrap_output(cloudpickle.loads(bytes.fromhex(done.stdout.strip())))
    assert output.get_deserialized() == 6
