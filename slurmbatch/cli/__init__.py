"""The ``slurmbatch`` command: check a cluster, list and collect jobs, run the local test cluster.

::

    slurmbatch doctor login.cluster.org --user me    # every step a session takes, with a verdict each
    slurmbatch jobs                                    # the journal's jobs not collected yet
    slurmbatch collect SESSION                         # reattach and print (or --save) their results
    slurmbatch cancel SESSION|JOBID
    slurmbatch logs JOBID
    slurmbatch cluster up|down|status                  # the local Slurm cluster behind sshd

One module per command group; each command's connection flags are named after
:class:`~slurmbatch.SlurmSession`'s parameters.
"""

from __future__ import annotations

import click

from .. import __version__
from .cluster import cluster
from .doctor import doctor
from .jobs import cancel, collect, jobs, logs

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="slurmbatch")
def main() -> None:
    """Run Python functions as Slurm jobs over SSH: check a cluster, look at jobs, collect results."""


main.add_command(doctor)
main.add_command(jobs)
main.add_command(collect)
main.add_command(cancel)
main.add_command(logs)
main.add_command(cluster)
