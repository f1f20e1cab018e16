"""``python -m benchmarks.throughput [harness options]``: submission throughput against slurmctld's limit.

P1, P2 and P4 of :mod:`benchmarks.compare` for plain ``sbatch`` on the login node (1 and 8 loops, and
one ``--array``) and slurmbatch ``submit()`` (one function and spec: P1a; distinct specs: P1b) and
``map()`` (P2, pickling and upload included); slurmctld's job-info RPCs per 1000 jobs run to completion
come from the P4 runs; the memory each pending future holds, from ``map`` over ``--futures`` held items
(100 000 unless given). ``--p1-jobs`` and ``--p2-items`` set the other sizes.
"""

from __future__ import annotations

import sys

from benchmarks.compare.entry import selection

CONTENDERS = (
    "sbatch-1",
    "sbatch-8",
    "sbatch-array",
    "slurmbatch-submit",
    "slurmbatch-distinct",
    "slurmbatch-map",
)


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    futures = [] if any(a.startswith("--futures") for a in given) else ["--futures", "100000"]
    return selection("throughput", CONTENDERS, ("p1", "p2", "p4", "memory"), futures + given)


if __name__ == "__main__":
    sys.exit(main())
