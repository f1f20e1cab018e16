"""A real local Slurm cluster reached through a real sshd, for tests, demos and benchmarks.

``python -m slurmbatch.testing up --json`` starts it and prints how to reach it; the pytest plugin
offers it as the session-scoped ``slurm_cluster`` fixture. `LocalCluster.login_user` adds login users
with other login shells and noisy start-up files (the ``NOISY_*`` and ``SITE_NOTICE_*`` presets),
`LocalCluster.start_sshd` login nodes as sites run them, and `LocalCluster.start_jump_hosts` jump hosts.
"""

from ._configs import ClusterOptions
from ._control_master import ControlMaster
from ._login_users import (
    BASHRC_GREETING,
    CSHRC_GREETING,
    NOISY_BASHRC,
    NOISY_BASHRC_STDERR,
    NOISY_CSHRC,
    SITE_NOTICE,
    SITE_NOTICE_CSHRC,
)
from ._mfa_login import MfaLoginNode
from ._processes import ClusterError
from .cluster import DEFAULT_STATE_DIR, ClusterSettings, JumpHosts, LocalCluster

__all__ = [
    "BASHRC_GREETING",
    "CSHRC_GREETING",
    "DEFAULT_STATE_DIR",
    "NOISY_BASHRC",
    "NOISY_BASHRC_STDERR",
    "NOISY_CSHRC",
    "SITE_NOTICE",
    "SITE_NOTICE_CSHRC",
    "ClusterError",
    "ClusterOptions",
    "ClusterSettings",
    "ControlMaster",
    "JumpHosts",
    "LocalCluster",
    "MfaLoginNode",
]
