"""The older single-purpose benchmark commands, as selections of the one harness.

Each names the contenders and measures it runs and the name its results are written under; every
other option is the harness's own (``--quick``/``--full``, ``--rtt``, ``--p1-jobs``, ...), so that each
measurement has one implementation.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .__main__ import main as compare


def selection(
    name: str, contenders: Sequence[str], phases: Sequence[str], argv: list[str] | None = None
) -> int:
    """Run the harness on ``contenders`` for ``phases``; results in ``results/<name>-<date>.*``."""
    given = list(sys.argv[1:] if argv is None else argv)
    return compare(["--results-name", name, "--only", *contenders, "--phases", *phases, *given])
