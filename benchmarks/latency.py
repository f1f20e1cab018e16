"""``python -m benchmarks.latency [harness options]``: submit→result latency of one trivial job.

P3 of :mod:`benchmarks.compare`: slurmbatch ``submit()`` then ``await``, slurmbatch_covalent's
``run()`` and ``ssh host sbatch`` per job, against the floor (plain ``sbatch`` + ``squeue`` every
10 ms on the login node), with 20 samples per run unless ``--p3-samples`` says otherwise; ``--rtt``
adds round-trip time between the client and the login node.
"""

from __future__ import annotations

import sys

from benchmarks.compare.entry import selection

CONTENDERS = ("sbatch-1", "ssh-per-job", "slurmbatch-submit", "slurmbatch-covalent")


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    samples = [] if any(a.startswith("--p3-samples") for a in given) else ["--p3-samples", "20"]
    return selection("latency", CONTENDERS, ("p3",), samples + given)


if __name__ == "__main__":
    sys.exit(main())
