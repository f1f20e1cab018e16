"""A real local Slurm cluster reached through a real sshd, for tests, demos and benchmarks.

``python -m slurmbatch.testing up --json`` starts it and prints how to reach it; the pytest plugin
offers it as the session-scoped ``slurm_cluster`` fixture.
"""

from ._configs import ClusterOptions
from ._processes import ClusterError
from .cluster import DEFAULT_STATE_DIR, ClusterSettings, LocalCluster

__all__ = ["DEFAULT_STATE_DIR", "ClusterError", "ClusterOptions", "ClusterSettings", "LocalCluster"]
