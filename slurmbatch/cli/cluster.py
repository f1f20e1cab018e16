"""``slurmbatch cluster up|down|status``: the local Slurm cluster behind sshd, for trying things out.

The same as ``python -m slurmbatch.testing``, whose code it runs (it needs root, and Debian or Ubuntu).
"""

from __future__ import annotations

import click

from ..testing.__main__ import main as testing_main

__all__ = ["cluster"]


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def cluster(arguments: tuple[str, ...]) -> None:
    """Start, stop or show the local cluster: up | down | status [--slurm 24.11] [--json] [-h]."""
    raise SystemExit(testing_main(list(arguments), prog="slurmbatch cluster"))
