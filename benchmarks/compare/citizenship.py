"""What a run cost the login node and the scheduler: SSH connections, refusals, slurmctld RPCs.

Counted around each run: logins and refusals from the cluster's sshd log (LogLevel VERBOSE), and
slurmctld's RPC counters from ``sdiag`` (by the job user, less what ``srun`` inside the jobs sent; and
the job-info queries of any user, which is what status polling costs).
"""

from __future__ import annotations

from typing import Any

import attrs

from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.logins import SshdLogMark

from .cluster import slurm

JOB_INFO = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE")
# What ``srun`` inside a job sends as the job user (its step's completion comes from slurmstepd, as root):
# part of the job, not of the client that submitted it.
IN_JOB = ("REQUEST_HET_JOB_ALLOC_INFO", "REQUEST_JOB_ALLOCATION_INFO", "REQUEST_JOB_STEP_CREATE")
# What sshd logs when it turns a connection or a channel away.
SSHD_REFUSALS = ("no more sessions", "past MaxStartups", "exceeded MaxStartups")


def rpc_counts(cluster: ClusterSettings) -> dict[str, int]:
    """slurmctld's RPC counts since it started: ``type:<NAME>`` and ``user:<name>`` keys."""
    counts: dict[str, int] = {}
    section = ""
    for line in slurm(cluster, "sdiag").splitlines():
        if not line.startswith("\t"):
            # "Remote Procedure Call statistics by message type" / "... by user"; other sections: none
            section = (
                line.rsplit(" ", 1)[-1] if line.startswith("Remote Procedure Call statistics by") else ""
            )
        elif section in ("type", "user") and "count:" in line:
            name = line.strip().split()[0]
            counts[f"{section}:{name}"] = int(line.split("count:")[1].split()[0])
    return counts


@attrs.frozen
class Snapshot:
    cluster: ClusterSettings
    mark: SshdLogMark
    rpcs: dict[str, int]

    @classmethod
    def take(cls, cluster: ClusterSettings) -> Snapshot:
        return cls(cluster, SshdLogMark.now(cluster.sshd_log), rpc_counts(cluster))

    def since(self) -> dict[str, Any]:
        """What happened since the snapshot was taken."""
        log = self.mark.text()
        after = rpc_counts(self.cluster)
        delta = {k: v - self.rpcs.get(k, 0) for k, v in after.items() if v - self.rpcs.get(k, 0)}
        return {
            "ssh_connections": self.mark.logins(),
            "sshd_refusals": sum(log.count(text) for text in SSHD_REFUSALS),
            "rpcs_job_user": delta.get(f"user:{self.cluster.user}", 0),
            "rpcs_job_info": sum(delta.get(f"type:{name}", 0) for name in JOB_INFO),
            "rpcs_by_type": {k[5:]: v for k, v in delta.items() if k.startswith("type:")},
        }


def in_jobs(costs: dict[str, Any]) -> int:
    """The RPCs of a run that ``srun`` inside its jobs sent."""
    return sum(costs["rpcs_by_type"].get(name, 0) for name in IN_JOB)
