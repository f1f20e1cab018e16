"""Configuration files of the local cluster, rendered from its layout. Pure: no I/O here."""

from __future__ import annotations

import attrs

from ._layout import ClusterLayout

# Tuned for a 2-core machine: the scheduler starts jobs as soon as they arrive instead of waiting for
# its periodic passes (latency ~0.7 s instead of ~2.7 s).
SCHEDULER_PARAMETERS = "batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,bf_interval=1,bf_continue,max_rpc_cnt=150"


@attrs.frozen
class ClusterOptions:
    """What a user may choose about the local cluster."""

    nodes: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    cpus_per_node: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    memory_per_node_mb: int = attrs.field(default=8000, validator=attrs.validators.ge(100))
    max_sessions: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    max_startups: str = "10:30:100"
    max_array_size: int = attrs.field(default=1001, validator=attrs.validators.ge(1))
    min_job_age: int = attrs.field(default=300, validator=attrs.validators.ge(2))
    slurmdbd: bool = False
    #: Kill jobs that use more memory than they asked for (RSS sampled every second from /proc, since
    #: containers have no usable cgroups): such jobs end OUT_OF_MEMORY.
    enforce_memory: bool = False
    #: The Slurm release: ``"22.05"`` is the host's own (Debian bookworm), ``"24.11"`` runs in a Debian
    #: trixie root of its own (with OpenSSH 10.0 and Python 3.13; see `_root`).
    slurm: str = attrs.field(default="22.05", validator=attrs.validators.in_(("22.05", "24.11")))
    #: Two partitions over the same nodes: jobs of ``high`` preempt those of ``low`` (the default), which
    #: are requeued after a grace time of :attr:`preempt_grace` seconds, and sent their ``--signal``
    #: first. Requeued jobs may start again after 11 s (``cred_expire=10``) rather than two minutes.
    preemption: bool = False
    preempt_grace: int = attrs.field(default=15, validator=attrs.validators.ge(1))


def slurm_conf(layout: ClusterLayout, options: ClusterOptions, *, hostname: str) -> str:
    """Render slurm.conf for a controller and ``options.nodes`` simulated nodes on 127.0.0.1."""
    ports = layout.ports
    lines = [
        f"ClusterName={layout.cluster_name}",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        f"SlurmctldPort={ports.slurmctld}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire is also how long a requeued job waits before it may start again.
        f"AuthInfo=socket={layout.munge_socket}" + (",cred_expire=10" if options.preemption else ""),
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={layout.state_dir / 'slurmctld'}",
        f"SlurmdSpoolDir={layout.state_dir / 'slurmd' / '%n'}",
        f"SlurmctldPidFile={layout.run_dir / 'slurmctld.pid'}",
        f"SlurmdPidFile={layout.run_dir / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={layout.log_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={layout.log_dir / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # No usable cgroups in containers: track processes by parent pid, no task confinement.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        *(
            [
                "JobAcctGatherType=jobacct_gather/linux",
                "JobAcctGatherParams=OverMemoryKill",
                "JobAcctGatherFrequency=1",
            ]
            if options.enforce_memory
            else ["JobAcctGatherType=jobacct_gather/none"]
        ),
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        f"SchedulerParameters={SCHEDULER_PARAMETERS}",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        # Without a default, a job that does not ask for memory is given the whole node's, and jobs
        # no longer share nodes.
        "DefMemPerCPU=64",
        # Lets a node advertise more CPUs than the machine has, so trivial jobs run side by side.
        "SlurmdParameters=config_overrides",
        f"MinJobAge={options.min_job_age}",
        f"MaxArraySize={options.max_array_size}",
        "MaxJobCount=200000",
        "KillWait=2",
        "OverTimeLimit=0",
        "InactiveLimit=0",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        "MessageTimeout=30",
        "MailProg=/bin/true",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={layout.jobcomp_file}",
    ]
    if options.slurmdbd:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={ports.slurmdbd}",
            # slurmdbd ignores AuthInfo; without this every sacct fails with a munge error.
            f"AccountingStoragePass={layout.munge_socket}",
        ]
    else:
        lines.append("AccountingStorageType=accounting_storage/none")
    for index, node in enumerate(layout.node_names):
        lines.append(
            f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={hostname} Port={ports.slurmd[index]}"
            f" CPUs={options.cpus_per_node} RealMemory={options.memory_per_node_mb} State=UNKNOWN"
        )
    if options.preemption:
        lines[1:1] = [
            "PreemptType=preempt/partition_prio",
            "PreemptMode=REQUEUE",
            # Without it, a preempted job gets SIGTERM at the end of its grace time, not its --signal.
            "SlurmctldParameters=preempt_send_user_signal",
        ]
        lines += [
            "PartitionName=low Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
            f"PreemptMode=REQUEUE GraceTime={options.preempt_grace}",
            "PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF",
        ]
    else:
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


# MariaDB listens on 127.0.0.1 only and holds nothing but this test cluster's accounting.
MARIADB_USER = "slurm"
MARIADB_PASSWORD = "slurmbatch-local"


#: 24.11's slurmd refuses to start without a cgroup filesystem unless cgroups are turned off.
CGROUP_CONF = "CgroupPlugin=disabled\n"


def slurmdbd_conf(layout: ClusterLayout) -> str:
    """Render slurmdbd.conf for a MariaDB on 127.0.0.1 at ``layout.ports.mariadb``."""
    return (
        "\n".join(
            [
                "AuthType=auth/munge",
                f"AuthInfo=socket={layout.munge_socket}",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                f"DbdPort={layout.ports.slurmdbd}",
                "SlurmUser=root",
                f"LogFile={layout.log_dir / 'slurmdbd.log'}",
                f"PidFile={layout.run_dir / 'slurmdbd.pid'}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={layout.ports.mariadb}",
                f"StorageLoc={layout.cluster_name}_acct",
                f"StorageUser={MARIADB_USER}",
                f"StoragePass={MARIADB_PASSWORD}",
            ]
        )
        + "\n"
    )
