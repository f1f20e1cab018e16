"""``python -m slurmbatch.cli``: the same as the ``slurmbatch`` command."""

from . import main

main()
