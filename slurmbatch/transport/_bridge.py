"""The one seam between the caller's async backend and asyncssh, which only runs on asyncio.

Under asyncio, an operation runs directly in the calling task, on the caller's event loop.

Under trio, asyncssh runs on a private asyncio event loop in one daemon thread, started on first use and
stopped by `AsyncioBridge.aclose`. Each operation becomes one asyncio task on that loop. The calling trio
task waits for it on an `anyio.Event` that the asyncio side sets through `trio.lowlevel.TrioToken`, so no
thread blocks on the other. If the trio task is cancelled, the asyncio task is cancelled too
(``loop.call_soon_threadsafe(task.cancel)``) and the trio task waits, shielded, until it has finished, so
its clean-up (closing a channel, signalling a remote command) has happened when the cancellation
propagates.

Limits:

* One bridge serves one event loop run: the first call binds it to that backend and loop, and a call from
  another raises `RuntimeError`.
* Every asyncssh object an operation creates belongs to the bridge's loop; only pass it back into
  operations run by the same bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

import anyio
import sniffio

from slurmbatch._errors import SessionClosedError

if TYPE_CHECKING:
    from trio.lowlevel import TrioToken

__all__ = ["AsyncioBridge"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncioBridge:
    """Runs coroutine functions on an asyncio event loop for callers on asyncio or trio."""

    def __init__(self) -> None:
        self._backend: str | None = None
        self._caller_loop: object = None  # the asyncio loop or trio run (its token) we are bound to
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    async def call(self, function: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await function(*args, **kwargs)`` on the asyncio loop and return its result.

        Exceptions propagate unchanged. Cancelling the caller cancels the operation and returns only once
        the operation has finished; a result that arrives after the cancellation is discarded.

        Raises:
            SessionClosedError: the bridge was closed before or while the operation ran.
            RuntimeError: called from a different event loop than the first call.
        """
        if self._bind() == "asyncio":
            return await function(*args, **kwargs)
        return await self._call_on_private_loop(functools.partial(function, *args, **kwargs))

    async def call_back(self, function: Callable[..., Any], /, *args: Any) -> Any:
        """From the asyncio side, run a caller's ``function(*args)`` where it belongs; return its result.

        A coroutine function runs on the caller's event loop: directly under asyncio, through
        ``trio.from_thread.run`` (from a worker thread, so the asyncio loop keeps serving other
        connections) under trio. A plain function runs in a worker thread, so one that blocks (a terminal
        prompt) stalls neither loop.
        """
        if not inspect.iscoroutinefunction(function) and not inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            return await asyncio.to_thread(function, *args)
        if self._backend != "trio":
            return await function(*args)
        import trio

        token = cast("TrioToken", self._caller_loop)
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(trio.from_thread.run, function, *args, trio_token=token)
        )

    def call_soon(self, function: Callable[..., object], /, *args: Any) -> None:
        """Schedule ``function(*args)`` on the asyncio loop without waiting for it.

        For short synchronous asyncssh calls such as ``connection.abort()``. Does nothing once closed.
        """
        if self._closed:
            return
        if self._private_loop is None:
            function(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile: nothing left to act on
                self._private_loop.call_soon_threadsafe(function, *args)

    async def aclose(self) -> None:
        """Stop the private event loop, if one was started, and wait for its thread to end.

        Operations still running on it are cancelled. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        loop, thread = self._private_loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)

    def _bind(self) -> str:
        """Return the caller's backend name, binding the bridge to it on first use."""
        if self._closed:
            raise SessionClosedError("the SSH connection pool is closed; open a new one")
        backend = sniffio.current_async_library()
        if backend == "asyncio":
            caller_loop: object = asyncio.get_running_loop()
        elif backend == "trio":
            import trio

            caller_loop = trio.lowlevel.current_trio_token()
        else:
            raise RuntimeError(f"slurmbatch's SSH transport runs under asyncio or trio, not {backend}")
        if self._backend is None:
            self._backend, self._caller_loop = backend, caller_loop
        elif (backend, caller_loop) != (self._backend, self._caller_loop):
            raise RuntimeError(
                f"this SSH connection pool was first used in another {self._backend} event loop; "
                "create one pool per event loop run"
            )
        return backend

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._private_loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve_forever, args=(loop,), name="slurmbatch-asyncssh", daemon=True
            )
            thread.start()
            self._private_loop, self._thread = loop, thread
        return self._private_loop

    async def _call_on_private_loop(self, operation: Callable[[], Awaitable[T]]) -> T:
        import trio  # only reached under trio, so trio is installed

        call = _ForeignCall(operation, trio.lowlevel.current_trio_token())
        loop = self._loop()
        # A fresh context: the caller's would carry trio's identity (sniffio) into the asyncio task.
        loop.call_soon_threadsafe(call.start, loop, context=contextvars.Context())
        try:
            await call.done.wait()
        except BaseException:
            # Cancelled (or interrupted): cancel the asyncio side and let it clean up before we unwind.
            # call.start is already queued ahead of this callback, so the task exists when it runs.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(call.cancel)
            with anyio.CancelScope(shield=True):
                await call.done.wait()
            raise
        return call.result()


class _ForeignCall(Generic[T]):
    """One operation running as an asyncio task on behalf of a trio task."""

    def __init__(self, operation: Callable[[], Awaitable[T]], trio_token: TrioToken) -> None:
        self._operation = operation
        self._trio_token = trio_token
        self._task: asyncio.Task[T] | None = None
        self._start_error: BaseException | None = None
        self.done = anyio.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the asyncio task (runs on the asyncio thread)."""
        try:
            self._task = loop.create_task(_as_coroutine(self._operation))
        except BaseException as error:  # e.g. the loop is shutting down
            self._start_error = error
            self._wake()
        else:
            self._task.add_done_callback(lambda _: self._wake())

    def cancel(self) -> None:
        """Cancel the asyncio task (runs on the asyncio thread)."""
        if self._task is not None:
            self._task.cancel()

    def result(self) -> T:
        """The task's result or exception, once `done` is set (read on the trio thread)."""
        if self._start_error is not None:
            raise self._start_error
        assert self._task is not None
        if self._task.cancelled():
            raise SessionClosedError("the SSH connection pool was closed while an operation was running")
        return self._task.result()

    def _wake(self) -> None:
        import trio

        # The trio run may have ended already if its caller was torn down; nobody is waiting then.
        with contextlib.suppress(trio.RunFinishedError):
            self._trio_token.run_sync_soon(self.done.set)


async def _as_coroutine(operation: Callable[[], Awaitable[T]]) -> T:
    return await operation()


def _serve_forever(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until stopped, then finish it the way `asyncio.run` does."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
