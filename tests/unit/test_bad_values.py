"""Bad session and connection settings are refused in plain words, before any connection is made.

Each case names the error type and words its message must hold: what was wrong, and what to do instead.
The JobSpec field checks have their own table in ``test_spec.py``; those that need a cluster are in
``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from slurmbatch import JobSpec, SlurmSession
from slurmbatch.transport import ConnectSettings


def session(**overrides: Any) -> SlurmSession:
    """A session on a host that is never contacted: every case here fails before connecting."""
    options: dict[str, Any] = {"ssh_config": (), "connect_timeout": 1.0}
    options.update(overrides)
    host = options.pop("host", "login.invalid")
    return SlurmSession(host, **options)


# (case id, what the user does, error type, words the message must hold)
BAD_SETTINGS: list[tuple[str, Callable[[], object], type[Exception], list[str]]] = [
    ("empty host", lambda: session(host=""), ValueError, ["host", "non-empty", "''", "Host alias"]),
    (
        "host with a user and port in it",
        lambda: session(host="me@login 2222"),
        ValueError,
        ["'me@login 2222'", "whitespace", "user=", "port="],
    ),
    ("host not a string", lambda: session(host=None), ValueError, ["host", "None", "non-empty host"]),
    ("port zero", lambda: session(port=0), ValueError, ["port", "1 to 65535", "got 0", "None"]),
    ("port too large", lambda: session(port=70000), ValueError, ["port", "1 to 65535", "70000"]),
    ("port as a string", lambda: session(port="22"), ValueError, ["port", "'22'", "whole number"]),
    ("empty user", lambda: session(user=""), ValueError, ["user", "login name", "''", "None"]),
    ("user with a space", lambda: session(user="my name"), ValueError, ["'my name'", "without spaces"]),
    ("empty key file path", lambda: session(key_file=""), ValueError, ["key_files", "empty path"]),
    ("key file not a path", lambda: session(key_file=[42]), TypeError, ["file paths", "42"]),
    (
        "negative connect timeout",
        lambda: session(connect_timeout=-1),
        ValueError,
        ["connect_timeout", "positive number of seconds", "-1"],
    ),
    (
        "infinite keepalive",
        lambda: ConnectSettings(host="h", keepalive_interval=float("inf"), ssh_config=()),
        ValueError,
        ["keepalive_interval", "positive number of seconds", "inf"],
    ),
    (
        "empty python",
        lambda: session(python=""),
        ValueError,
        ["python must name an interpreter", "'python3'"],
    ),
    (
        "python with an unclosed quote",
        lambda: session(python="'/opt/my python/bin/python3"),
        ValueError,
        ["python is", "cannot be split into words", "No closing quotation", "Close every quote"],
    ),
    (
        "python with a trailing backslash",
        lambda: session(python="python3 \\"),
        ValueError,
        ["cannot be split into words", "No escaped character", "trailing backslashes"],
    ),
    ("python not a string", lambda: session(python=3.11), TypeError, ["python must be a string", "3.11"]),
    (
        "default_spec not a JobSpec",
        lambda: session(default_spec={"time": "1:00"}),
        TypeError,
        ["default_spec must be a JobSpec", "dict"],
    ),
    (
        "cancel_timeout of zero",
        lambda: session(cancel_timeout=0),
        ValueError,
        ["cancel_timeout must be a positive number of seconds", "not 0"],
    ),
    (
        "cancel_timeout as a string",
        lambda: session(cancel_timeout="60"),
        ValueError,
        ["cancel_timeout must be a positive number of seconds", "'60'"],
    ),
    (
        "JobSpec.python with an unclosed quote",
        lambda: JobSpec(python='"/opt/py/bin/python3 -u'),
        ValueError,
        ["JobSpec.python", "cannot be split into words", "Close every quote"],
    ),
    (
        "negative array_parallelism",
        lambda: JobSpec(array_parallelism=-4),
        ValueError,
        ["JobSpec.array_parallelism is -4", "at least 1", "None for no limit"],
    ),
    (
        "option name with a newline",
        lambda: JobSpec(options={"time\n#SBATCH --mem": "1"}),
        ValueError,
        ["not a valid option name", "letters, digits"],
    ),
]


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [pytest.param(make, error, words, id=case) for case, make, error, words in BAD_SETTINGS],
)
def test_bad_settings_are_refused_in_plain_words(
    make: Callable[[], object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        make()
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


# Limits the session hands to its connection pool: refused when the block is entered, before connecting.
BAD_LIMITS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no connections", {"max_connections": 0}, ["max_connections", "from 1 to 64", "got 0"]),
    ("fractional connections", {"max_connections": 1.5}, ["max_connections", "whole number", "1.5"]),
    (
        "more channels than sshd allows",
        {"max_channels": 100},
        ["max_channels", "from 1 to 64", "100", "MaxSessions"],
    ),
    ("channels as a flag", {"max_channels": True}, ["max_channels", "whole number", "True"]),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "words"),
    [pytest.param(overrides, words, id=case) for case, overrides, words in BAD_LIMITS],
)
async def test_bad_pool_limits_are_refused_before_connecting(
    overrides: dict[str, Any], words: list[str]
) -> None:
    with anyio.fail_after(5), pytest.raises(ValueError) as caught:
        async with session(**overrides):
            pass
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


@pytest.mark.parametrize("interval", [(0, 0), (-1, 5), (30, 2), (2.0,), "fast"], ids=repr)
def test_bad_status_interval_is_refused(interval: object) -> None:
    with pytest.raises((TypeError, ValueError), match="status_interval"):
        session(status_interval=interval)
