"""Running a command's coroutine, and turning slurmbatch's errors into one plain line and exit status 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.console import Console

from .._errors import SlurmBatchError

__all__ = ["console", "fail", "run"]

T = TypeVar("T")

#: Where tables and verdicts go: standard output, without colour when it is not a terminal.
console = Console(highlight=False)
_errors = Console(stderr=True, highlight=False)


def fail(message: str, *, status: int = 1) -> None:
    """Print ``error: message`` on standard error and exit with ``status``."""
    _errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise SystemExit(status)


def run(function: Callable[[], Awaitable[T]]) -> T:
    """Run ``function()`` on a fresh asyncio loop; a slurmbatch error or a bad setting exits with status 1.

    Bad settings (``ValueError``/``TypeError`` from a session's constructor) are the user's flags, so they
    are reported the same way, without a traceback. Anything else is a bug and keeps its traceback.
    """

    async def main() -> T:
        return await function()

    try:
        return asyncio.run(main())
    except SlurmBatchError as error:
        fail(f"{type(error).__name__}: {error}")
    except (ValueError, TypeError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise click.Abort() from None
    raise AssertionError("unreachable")
