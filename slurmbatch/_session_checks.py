"""Checks of SlurmSession's settings, made when it is created: the mistake is on the caller's line. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .transport import ConnectSettings
from .transport.kbdint import KbdintHandler

__all__ = [
    "checked_cancel_timeout",
    "checked_interval",
    "checked_max_argument_bytes",
    "connect_settings",
    "slurm_setup_text",
]

UNSET: Any = object()


def connect_settings(
    host: str,
    *,
    user: str | None,
    port: int | None,
    key_file: str | Path | Sequence[str | Path] | None,
    cert_file: str | Path | None,
    passphrase: str | None,
    known_hosts: str | Path | None,
    verify_host_key: bool,
    ssh_config: Any,
    connect_timeout: float,
    kbdint: KbdintHandler | None = None,
) -> ConnectSettings:
    """The SSH settings of a session (``ssh_config`` :data:`UNSET`: the default config files)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": user,
        "passphrase": passphrase,
        "verify_host_key": verify_host_key,
        "connect_timeout": connect_timeout,
        "kbdint": kbdint,
    }
    if key_file is not None:
        options["key_files"] = [key_file] if isinstance(key_file, (str, Path)) else list(key_file)
    if cert_file is not None:
        options["cert_files"] = [str(cert_file)]
    if known_hosts is not None:
        options["known_hosts"] = str(known_hosts)
    if ssh_config is not UNSET:
        options["ssh_config"] = [ssh_config] if isinstance(ssh_config, (str, Path)) else list(ssh_config)
    return ConnectSettings(**options)


def checked_interval(interval: Any) -> tuple[float, float]:
    """``status_interval`` as two floats, or a :class:`ValueError` that says what it must be."""
    numbers = (
        isinstance(interval, (tuple, list))
        and len(interval) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval)
    )
    if not numbers or not (0 < interval[0] <= interval[1] < math.inf):
        raise ValueError(
            "status_interval must be two positive numbers of seconds, shortest first, e.g. (2.0, 30.0); "
            f"got {interval!r}"
        )
    return float(interval[0]), float(interval[1])


def checked_cancel_timeout(value: Any) -> float:
    """``cancel_timeout`` as a float, or a :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"cancel_timeout must be a positive number of seconds, e.g. 60, not {value!r}")
    return float(value)


def checked_max_argument_bytes(value: Any) -> int | None:
    """``max_argument_bytes``: a positive int or None, else a :class:`ValueError`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_argument_bytes must be a positive number of bytes or None, not {value!r}")
    return value


def slurm_setup_text(slurm_setup: Any) -> str:
    """The shell text that runs ``slurm_setup``'s lines before Slurm commands ("" for none)."""
    if isinstance(slurm_setup, str) or not all(isinstance(line, str) for line in slurm_setup):
        raise TypeError(
            f"slurm_setup must be a list of shell lines, not {slurm_setup!r}: e.g. ['module load slurm']"
        )
    # In the current shell (exports must last) with its output dropped: it would garble the replies.
    return "{\n" + "".join(f"{line}\n" for line in slurm_setup) + "} >/dev/null\n" if slurm_setup else ""
