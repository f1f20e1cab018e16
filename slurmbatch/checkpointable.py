"""The checkpoint protocol of functions run with `JobSpec(requeue=True)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Checkpointable", "ResumeCall"]

ResumeCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
"""The call a requeued job resumes with: `(callable, args, kwargs)`."""


@runtime_checkable
class Checkpointable(Protocol):
    """A callable that can say, while it runs, how to go on from where it is.

    Submit an instance (its class defined at module level, or pickled by value) with
    `JobSpec(requeue=True)`. When Slurm warns the job that it is about to stop (`requeue_signal`
    `signal_lead` seconds before its time limit, or on preemption where the cluster sends the signal),
    the job calls `checkpoint` with the arguments of the running call, in the signal handler of the
    job's main thread, while the call is paused. It returns the call to resume with as
    `(callable, args, kwargs)` (usually `(self, new_args, new_kwargs)`, with `self` holding the
    progress so far), or `None` for no checkpoint (the job then runs on until Slurm stops it).

    The returned call is pickled (with cloudpickle) into the job's files, and the job asks Slurm to
    requeue it; when it starts again, that call runs instead of the original and its result resolves the
    future, which stays pending across requeues. Keep checkpoints quick (well within `signal_lead`)
    and the returned call small; save large state to files yourself and return their paths.

    Example:

    ```python
    class Count:
        def __init__(self) -> None:
            self.done = 0

        def __call__(self, until: int) -> int:
            while self.done < until:
                step(self.done)
                self.done += 1
            return self.done

        def checkpoint(self, until: int) -> ResumeCall:
            return self, (until,), {}
    ```

    With `use_srun=True` every rank receives the signal and saves a checkpoint of its own call; the
    requeued job resumes every rank from the one saved last.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def checkpoint(self, *args: Any, **kwargs: Any) -> ResumeCall | None:
        """The call to resume with, or None for no checkpoint now."""
        ...
