"""What a Covalent task runs on the compute node: the standard library and cloudpickle, nothing else.

Covalent hands the executor `partial(wrapper_fn, function, call_before, call_after)` and arguments, all
as `TransportableObject` instances, which only unpickle where covalent is installed. The executor sends
their serialized payloads instead (base64 text of cloudpickle bytes), and `run_task` does on the
node what `wrapper_fn` does. Its result is the output serialized the same way, so the server wraps it
back into a `TransportableObject` without having to import the output's classes.

This module is pickled by value (see `register`), so the node needs neither covalent nor slurmbatch.
"""

from __future__ import annotations

import base64
import platform
import sys
from typing import Any

import cloudpickle

__all__ = ["SerializedCall", "register", "run_task"]

SerializedCall = tuple[str, str, str, str]
"""A `call_before`/`call_after` hook: serialized function, args, kwargs, and the return value's key."""


def register() -> None:
    """Pickle this module's functions by value: the node cannot import slurmbatch_covalent."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _load(serialized: str) -> Any:
    return cloudpickle.loads(base64.b64decode(serialized))


def run_task(
    function: str,
    args: list[str],
    kwargs: dict[str, str],
    call_before: list[SerializedCall],
    call_after: list[SerializedCall],
    files_key: str,
) -> dict[str, Any]:
    """Run the task as covalent's `wrapper_fn` would; return its output, serialized, with a header.

    Values returned by `call_before` hooks are passed to the function as keyword arguments under their
    key: one value as itself, several (or any under `files_key`) as a list.
    """
    returned: dict[str, list[Any]] = {}
    for hook, hook_args, hook_kwargs, key in call_before:
        value = _load(hook)(*_load(hook_args), **_load(hook_kwargs))
        if key:
            returned.setdefault(key, []).append(value)
    call_kwargs = {name: _load(value) for name, value in kwargs.items()}
    for key, values in returned.items():
        call_kwargs[key] = values[0] if len(values) == 1 and key != files_key else values
    output = _load(function)(*[_load(arg) for arg in args], **call_kwargs)
    for hook, hook_args, hook_kwargs, _ in call_after:
        _load(hook)(*_load(hook_args), **_load(hook_kwargs))
    return {
        "object": base64.b64encode(cloudpickle.dumps(output)).decode("ascii"),
        "string": str(output),
        "python_version": platform.python_version(),
        "cloudpickle_version": cloudpickle.__version__,
        "doc": getattr(output, "__doc__", ""),
        "name": getattr(output, "__name__", ""),
    }
