"""``python -m benchmarks [--jobs N]``: run the submission benchmarks and print their table."""

from __future__ import annotations

import sys

from .core_submit import main

if __name__ == "__main__":
    sys.exit(main())
