"""``slurmbatch jobs | collect | cancel | logs``: the jobs the local journal knows, without writing Python.

The journal (see :mod:`slurmbatch._journal`) records every job a session submitted, with its session's
login node and work directory; these commands read it, and connect (with the same flags as a session)
only to collect, cancel or read logs.
"""

from __future__ import annotations

import datetime
import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import click
import cloudpickle
from rich.table import Table

from .._errors import JournalError, SlurmBatchError
from .._journal import default_journal_path
from .._journal_listing import JournalRow, find_job, list_jobs, session_row
from .._remote_layout import RemoteLayout
from .._session_checks import slurm_setup_text
from ..session import SlurmSession
from ..slurm.commands import scancel_commands
from ..transport import SSHPool
from ._running import console, fail, run
from ._session_options import connect_settings_of, session_kwargs, session_options

__all__ = ["cancel", "collect", "jobs", "logs"]

_journal_option = click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The journal file (default {default_journal_path()}).",
)


def _journal(path: Path | None) -> Path:
    return path if path is not None else default_journal_path()


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%m-%d %H:%M:%S")


@click.command()
@click.option("--session", "session_id", help="Only the jobs of this session.")
@click.option("--all", "show_all", is_flag=True, help="Also the jobs already collected.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list, for machines.")
@_journal_option
def jobs(session_id: str | None, show_all: bool, as_json: bool, journal: Path | None) -> None:
    """List the sessions and jobs of the local journal: those not collected yet, or --all."""
    try:
        rows = list_jobs(_journal(journal), session=session_id, include_collected=show_all)
    except JournalError as error:
        fail(str(error))
    if as_json:
        click.echo(json.dumps([attrs.asdict(row) for row in rows], indent=2))
        return
    if not rows:
        what = "no jobs" if show_all else "no uncollected jobs (--all lists the collected ones too)"
        console.print(
            f"The journal {_journal(journal)} has {what}" + (f" of {session_id}." if session_id else ".")
        )
        return
    table = Table(title=f"slurmbatch jobs ({_journal(journal)})", title_justify="left")
    for column in ("session", "host", "job id", "state", "submitted", "updated", "session opened"):
        table.add_column(column, overflow="fold")
    for row in rows:
        session = row.session + (" (open)" if row.running else "")
        submitted = "-" if row.submitted is None else _when(row.submitted)
        table.add_row(
            session, row.host, row.job_id or "-", row.state, submitted, _when(row.updated), _when(row.opened)
        )
    console.print(table)


@click.command()
@click.argument("session_id", metavar="SESSION")
@click.option(
    "--save",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each result to DIR/<job id>.pickle instead of printing it.",
)
@_journal_option
@session_options
def collect(session_id: str, save: Path | None, journal: Path | None, **params: Any) -> None:
    """Reattach to SESSION (an id from `slurmbatch jobs`), wait for its jobs and print or --save their results.

    Exit status 1 if any job ended without a result (its error is printed).
    """
    options = session_kwargs(params)
    path = _journal(journal)
    try:
        host, workdir = session_row(path, session_id)
    except JournalError as error:
        fail(str(error))
    options.setdefault("remote_workdir", workdir)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)

    async def collect_all() -> int:
        failures = 0
        async with SlurmSession(host, journal=path, **options) as session:
            futures = await session.reattach(session_id)
            if not futures:
                console.print(f"Session {session_id} has no jobs left to collect.")
            async for future in session.as_completed(futures):
                try:
                    value = await future
                except SlurmBatchError as error:
                    failures += 1
                    console.print(
                        f"job {future.job_id}: [red]{type(error).__name__}[/]: {error}", soft_wrap=True
                    )
                    continue
                except Exception as error:  # the function's own exception, re-raised here
                    failures += 1
                    console.print(f"job {future.job_id}: raised [red]{type(error).__name__}[/]: {error}")
                    continue
                if save is None:
                    console.print(f"job {future.job_id}: {value!r}", soft_wrap=True)
                else:
                    target = save / f"{future.job_id}.pickle"
                    target.write_bytes(cloudpickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL))
                    console.print(f"job {future.job_id}: saved to {target}")
        return failures

    raise SystemExit(1 if run(collect_all) else 0)


def _targets(path: Path, what: str) -> list[JournalRow]:
    if what.startswith("session-"):
        session_row(path, what)  # an unknown session is an error, not "nothing to cancel"
        return [row for row in list_jobs(path, session=what) if row.job_id]
    return [find_job(path, what)]


@click.command()
@click.argument("what", metavar="SESSION|JOBID")
@_journal_option
@session_options
def cancel(what: str, journal: Path | None, **params: Any) -> None:
    """Cancel a job (by its Slurm job id), or every uncollected job of a session (by its id), with scancel."""
    options = session_kwargs(params)
    path = _journal(journal)
    try:
        rows = _targets(path, what)
    except JournalError as error:
        fail(str(error))
    if not rows:
        console.print(f"Session {what} has no uncollected jobs: nothing to cancel.")
        return
    host = rows[0].host
    ids = [row.job_id for row in rows if row.job_id]
    setup = slurm_setup_text(options.get("slurm_setup", ()))

    async def cancel_all() -> None:
        async with SSHPool(connect_settings_of(host, options), max_connections=1) as pool:
            for command, job_ids in scancel_commands(ids):
                result = await pool.script(setup + command, data="\n".join(job_ids) + "\n", what="scancel")
                if result.exit_status != 0:
                    raise SlurmBatchError(
                        f"scancel on {host} failed (exit status {result.exit_status}): "
                        f"{result.stderr.strip() or result.stdout.strip()}"
                    )

    run(cancel_all)
    # scancel accepts jobs that have already ended, so this names what was asked, not what was running.
    console.print(f"scancel sent on {host} for: {', '.join(ids)}")


@click.command()
@click.argument("job_id", metavar="JOBID")
@click.option("--stdout", "streams", flag_value="stdout", help="Only the job's standard output.")
@click.option("--stderr", "streams", flag_value="stderr", help="Only the job's standard error.")
@_journal_option
@session_options
def logs(job_id: str, streams: str | None, journal: Path | None, **params: Any) -> None:
    """Show the standard output and error of JOBID (a job the journal knows) from the remote work directory."""
    options = session_kwargs(params)
    try:
        row = find_job(_journal(journal), job_id)
    except JournalError as error:
        fail(str(error))
    layout = RemoteLayout(row.workdir)
    paths = {"stdout": layout.stdout(row.token), "stderr": layout.stderr(row.token)}
    if streams is not None:
        paths = {streams: paths[streams]}

    async def read() -> dict[str, bytes | None]:
        async with (
            SSHPool(connect_settings_of(row.host, options), max_connections=1) as pool,
            pool.sftp() as sftp,
        ):
            return await sftp.get_many(list(paths.values()))

    found = run(read)
    for name, remote in paths.items():
        data = found.get(remote)
        console.rule(f"{name} of job {job_id} ({remote})")
        if data is None:
            console.print("(no such file: the job has not started, or its files were cleaned up)")
        else:
            console.out(data.decode(errors="replace"), end="", highlight=False)
