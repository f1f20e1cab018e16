"""A drop-in Covalent Slurm executor on the slurmbatch SDK: `executor="slurm"`, `[executors.slurm]`.

The executor is `slurmbatch_covalent.slurm.SlurmExecutor`, which Covalent finds through its
`covalent.executor.executor_plugins` entry point.
"""

import contextlib

# Covalent loads every executor plugin while it is being imported. Importing it here, before the plugin
# module, means the plugin module is complete when Covalent loads it, even when a program imports
# slurmbatch_covalent.slurm before covalent (otherwise Covalent would see it half-imported and skip it).
with contextlib.suppress(ImportError):
    import covalent  # noqa: F401
