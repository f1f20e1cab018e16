"""Unwrap what Covalent passes to `run()` into a call the node can run, and wrap the output back."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import cloudpickle
from covalent._workflow.depscall import RESERVED_RETVAL_KEY__FILES
from covalent._workflow.transportable_object import TransportableObject
from covalent.executor.utils.wrappers import wrapper_fn

from . import _job

__all__ = ["Call", "unwrap", "wrap_output"]

_job.register()


@attrs.frozen
class Call:
    """A function call for `SlurmSession.submit`; `covalent_task`: its value is a serialized output."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    covalent_task: bool


def unwrap(function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
    """The node-side call for Covalent's `partial(wrapper_fn, fn, call_before, call_after)`.

    Anything else (a plain function, as when `run()` is called directly) is submitted as it is.
    """
    if not (isinstance(function, functools.partial) and function.func is wrapper_fn):
        return Call(function, tuple(args), dict(kwargs), covalent_task=False)
    serialized_fn, call_before, call_after = function.args
    task_args = (
        _serialized(serialized_fn),
        [_serialized(arg) for arg in args],
        {name: _serialized(value) for name, value in kwargs.items()},
        [_hook(hook) for hook in call_before],
        [_hook(hook) for hook in call_after],
        RESERVED_RETVAL_KEY__FILES,
    )
    return Call(_job.run_task, task_args, {}, covalent_task=True)


def _serialized(value: Any) -> str:
    # Covalent passes TransportableObjects; anything else is serialized here the same way.
    if isinstance(value, TransportableObject):
        return str(value.get_serialized())
    return str(TransportableObject(value).get_serialized())


def _hook(hook: Sequence[Any]) -> _job.SerializedCall:
    fn, args, kwargs, key = hook
    return (_serialized(fn), _serialized(args), _serialized(kwargs), key or "")


# The attributes of a TransportableObject; checked so that a Covalent that changes them is noticed.
_TRANSPORTABLE_ATTRIBUTES = {"_object", "_object_string", "_header"}


def wrap_output(output: dict[str, Any]) -> TransportableObject:
    """The `TransportableObject` of a task output that `run_task` returned.

    The output stays serialized, as it would coming from covalent's own `wrapper_fn`: the server need
    not import its classes.
    """
    if set(vars(TransportableObject(None))) != _TRANSPORTABLE_ATTRIBUTES:
        # Another Covalent release: build it the public way, at the cost of unpickling the output here.
        return TransportableObject(cloudpickle.loads(base64.b64decode(output["object"])))
    attributes = {
        "_object": output["object"],
        "_object_string": output["string"],
        "_header": {
            "py_version": output["python_version"],
            "cloudpickle_version": output["cloudpickle_version"],
            "attrs": {"doc": output["doc"], "name": output["name"]},
        },
    }
    return TransportableObject.from_dict({"type": "TransportableObject", "attributes": attributes})
