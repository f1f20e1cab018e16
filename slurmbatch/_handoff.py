"""Handing work between threads and the executor's event loop: inboxes, and the callback thread.

An :class:`Inbox` collects items put by any thread and says when the loop must be woken: only the
first item since the loop last took them, so that many threads putting at once cost one wake-up. The
:class:`CallbackThread` runs done callbacks outside the event loop, in the order they came.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["CallbackThread", "Inbox", "call_logged"]

logger = logging.getLogger("slurmbatch")
T = TypeVar("T")


class Inbox(Generic[T]):
    """Items put by threads, taken by the loop all at once.

    :meth:`put` returns True when the taker must be woken (the inbox was empty since the last
    :meth:`take`, or nobody has woken it since); the others ride along.
    """

    def __init__(self) -> None:
        self._items: list[T] = []
        self._woken = False

    def put(self, item: T) -> bool:
        """Add ``item`` (the caller holds the lock); True if the taker must be woken now."""
        self._items.append(item)
        wake, self._woken = not self._woken, True
        return wake

    def take(self) -> list[T]:
        """Everything put since the last take (the caller holds the lock); the next put wakes again."""
        items, self._items = self._items, []
        self._woken = False
        return items

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self) -> list[T]:
        """What is waiting, without taking it (the caller holds the lock)."""
        return list(self._items)


def call_logged(fn: Callable[[Any], object], future: Any) -> None:
    """Call a done callback; log what it raises, as the standard library's futures do."""
    try:
        fn(future)
    except Exception:
        logger.exception("exception calling callback for %r", future)


class CallbackThread:
    """One daemon thread that runs posted callbacks in order; started with the first one."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], object], Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def post(self, fn: Callable[[Any], object], future: Any) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((fn, future))

    def stop(self) -> None:
        """Let the thread end once it ran what was posted before (nothing to do if it never started)."""
        with self._start_lock:
            if self._thread is not None:
                self._queue.put(None)

    def join(self, timeout: float | None) -> None:
        """Wait for the thread to end (not when called from it: a callback may shut the executor down)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            call_logged(*item)
