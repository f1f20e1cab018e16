"""Errors of the status loop's tasks, as the session's outage handling sees them."""

from __future__ import annotations

import sys

import pytest

from slurmbatch._errors import ConnectError, ConnectionLost
from slurmbatch._reconnect import one_connect_error

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


def test_connection_errors_of_several_tasks_at_once_are_one_outage() -> None:
    lost = ConnectionLost("lost", host="h")
    final = ConnectError("gave up after reconnect_deadline=3", host="h")
    assert one_connect_error(ExceptionGroup("g", [lost, ConnectionLost("again", host="h")])) is lost
    # Past the deadline in one task: that is the outcome, not a retry.
    assert one_connect_error(ExceptionGroup("g", [lost, ExceptionGroup("n", [final])])) is final


@pytest.mark.parametrize("other", [ValueError("bug"), KeyError("x")])
def test_any_other_error_keeps_the_group(other: Exception) -> None:
    group = ExceptionGroup("g", [ConnectionLost("lost", host="h"), other])
    assert one_connect_error(group) is group
    single = ConnectionLost("lost", host="h")
    assert one_connect_error(single) is single
