"""``python -m benchmarks [harness options]``: submission throughput of the SDK core against plain sbatch.

P1 of :mod:`benchmarks.compare` for plain ``sbatch`` on the login node (1 and 8 loops: the limit) and
concurrent ``submit()`` calls of one function and spec through one SlurmSession; the SSH connections,
refusals and slurmctld RPCs of each run are in the same table. ``--p1-jobs N`` sets the number of jobs.
"""

from __future__ import annotations

import sys

from benchmarks.compare.entry import selection

CONTENDERS = ("sbatch-1", "sbatch-8", "slurmbatch-submit")


def main(argv: list[str] | None = None) -> int:
    return selection("core-submit", CONTENDERS, ("p1",), argv)


if __name__ == "__main__":
    sys.exit(main())
