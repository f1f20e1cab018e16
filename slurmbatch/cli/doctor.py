"""``slurmbatch doctor HOST``: check, one step at a time, that a session would work against a cluster."""

from __future__ import annotations

import json
from typing import Any

import click

from ._diagnosis import Check, failed, run_checks
from ._running import console, run
from ._session_options import session_kwargs, session_options

__all__ = ["doctor"]

_MARKS = {
    "ok": "[green]ok  [/]",
    "warn": "[yellow]warn[/]",
    "fail": "[bold red]FAIL[/]",
    "skip": "[dim]skip[/]",
}


def _print_check(check: Check) -> None:
    console.print(f"{_MARKS[check.verdict]}  [bold]{check.name:<15}[/] {check.detail}", soft_wrap=True)
    if check.advice:
        console.print(f"      {'':<15} [cyan]-> {check.advice}[/]", soft_wrap=True)


@click.command()
@click.argument("host")
@session_options
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object, for machines.")
def doctor(host: str, as_json: bool, **params: Any) -> None:
    """Check that a session can work against HOST (a host name, an address or an ssh-config alias).

    Steps: the address and port, the host key, the login and its method, MaxSessions, the login shell and
    its start-up output, Slurm's commands, the remote Python and cloudpickle, accounting, MaxArraySize,
    the Slurm version, the work directory, and one tiny job from submission to result. Exit status 0
    only when every step passes (warnings allowed), 1 otherwise.
    """
    options = session_kwargs(params)
    checks = run(lambda: run_checks(host, options, on_check=(lambda _: None) if as_json else _print_check))
    ok = not failed(checks)
    if as_json:
        click.echo(json.dumps({"host": host, "ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    elif ok:
        console.print("[bold green]A session to this cluster would work.[/]")
    else:
        console.print("[bold red]A session to this cluster would not work: see the FAIL lines above.[/]")
    raise SystemExit(0 if ok else 1)
