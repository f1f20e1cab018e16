"""A rich progress bar for ``session.map(..., progress=True)``: submitted / running / done / failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .future import JobFuture
from .slurm.states import JobState


def require_rich() -> None:
    """Raise a plain :class:`ImportError` (what to install) unless rich can be imported."""
    try:
        import rich.progress  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "map(progress=True) draws its progress bar with rich, which is not installed here: "
            "pip install 'slurmbatch[rich]' (or pip install rich), or call map() without progress=True."
        ) from exc


async def show_progress(
    futures: Sequence[JobFuture[Any]], progress_event: Callable[[], anyio.Event], title: str
) -> None:
    """Draw a bar until every future is done; states change at each status query, results at once."""
    # Imported here: rich is optional, and map() checked with require_rich() before submitting.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(title, total=len(futures), counts="")
        while True:
            event = progress_event()
            done = [f for f in futures if f.done()]
            failed = sum(1 for f in done if f.exception() is not None)
            running = sum(1 for f in futures if not f.done() and f.state is JobState.RUNNING)
            counts = (
                f"submitted {len(futures)} · running {running} · done {len(done) - failed} · failed {failed}"
            )
            bar.update(task, completed=len(done), counts=counts)
            if len(done) == len(futures):
                return
            # Woken by finished jobs; the timeout refreshes the running count between them.
            with anyio.move_on_after(1.0):
                await event.wait()
