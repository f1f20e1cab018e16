"""Handing work between threads and the executor's loop: one wake-up per burst, callbacks in order."""

from __future__ import annotations

import logging
import threading

import pytest

from slurmbatch._handoff import CallbackThread, Inbox


def test_an_inbox_asks_for_one_wake_up_per_burst() -> None:
    inbox: Inbox[int] = Inbox()
    assert [inbox.put(i) for i in range(4)] == [True, False, False, False]
    assert len(inbox) == 4 and inbox.snapshot() == [0, 1, 2, 3]
    assert inbox.take() == [0, 1, 2, 3] and len(inbox) == 0
    assert inbox.put(9)  # taken since: the next put wakes again
    assert inbox.take() == [9] and inbox.take() == []


def test_callbacks_run_in_order_in_their_own_thread_and_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = CallbackThread("test-callbacks")
    seen: list[tuple[str, str]] = []

    def note(value: str) -> None:
        seen.append((value, threading.current_thread().name))

    def broken(value: str) -> None:
        raise RuntimeError(f"bug in {value}")

    with caplog.at_level(logging.ERROR, logger="slurmbatch"):
        for value in ("a", "b"):
            runner.post(note, value)
        runner.post(broken, "c")
        runner.post(note, "d")
        runner.stop()
        runner.join(10)
    assert seen == [("a", "test-callbacks"), ("b", "test-callbacks"), ("d", "test-callbacks")]
    assert "bug in c" in caplog.text


def test_a_callback_thread_never_started_stops_at_once() -> None:
    runner = CallbackThread("unused")
    runner.stop()
    runner.join(0.1)  # returns: there is no thread to wait for


def test_a_callback_may_join_its_own_thread() -> None:
    runner = CallbackThread("self-join")
    done = threading.Event()

    def shut_down(_: object) -> None:
        runner.join(None)  # what shutdown(wait=True) inside a callback does: must not wait for itself
        done.set()

    runner.post(shut_down, None)
    assert done.wait(10)
    runner.stop()
    runner.join(10)
