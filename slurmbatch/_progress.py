"""A rich progress bar for ``session.map(..., progress=True)``: submitted / running / done / failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .future import JobFuture
from .slurm.states import JobState


async def show_progress(
    futures: Sequence[JobFuture[Any]], progress_event: Callable[[], anyio.Event], title: str
) -> None:
    """Draw a bar until every future is done; states change at each status query, results at once."""
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("progress=True needs rich: pip install 'slurmbatch[rich]'") from exc
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
