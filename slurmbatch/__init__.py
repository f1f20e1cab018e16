"""slurmbatch: run Python functions as Slurm jobs over SSH, from plain code, asyncio or trio.

::

    with SlurmExecutor("login.cluster.org", user="me") as executor:
        print(executor.submit(simulate, 1.0, 2.0).result())

    async with SlurmSession("login.cluster.org", user="me") as session:
        future = await session.submit(simulate, (1.0, 2.0), JobSpec(options={"time": "00:10:00"}))
        print(await future)
"""

from ._errors import (
    ConnectError,
    ConnectionLost,
    DependencyFailed,
    IncompleteReply,
    JobCancelled,
    JobFailed,
    JobNodeFailure,
    JobOutOfMemory,
    JobPreempted,
    JobTimeout,
    JournalError,
    PayloadError,
    RemoteEnvironmentError,
    RemoteError,
    SessionClosedError,
    SlurmBatchError,
    SubmissionError,
)
from ._sync_future import SyncJobFuture
from .executor import SlurmExecutor
from .future import JobFuture
from .rpc_budget import RpcBudget
from .session import SlurmSession
from .slurm.release import ClusterInfo
from .slurm.states import JobState
from .spec import JobSpec

__all__ = [
    "ClusterInfo",
    "ConnectError",
    "ConnectionLost",
    "DependencyFailed",
    "IncompleteReply",
    "JobCancelled",
    "JobFailed",
    "JobFuture",
    "JobNodeFailure",
    "JobOutOfMemory",
    "JobPreempted",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "JournalError",
    "PayloadError",
    "RemoteEnvironmentError",
    "RemoteError",
    "RpcBudget",
    "SessionClosedError",
    "SlurmBatchError",
    "SlurmExecutor",
    "SlurmSession",
    "SubmissionError",
    "SyncJobFuture",
]
