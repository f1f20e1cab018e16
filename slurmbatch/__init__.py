"""slurmbatch: run Python functions as Slurm jobs over SSH, under asyncio or trio.

::

    async with SlurmSession("login.cluster.org", user="me") as session:
        future = await session.submit(simulate, (1.0, 2.0), JobSpec(options={"time": "00:10:00"}))
        print(await future)
"""

from ._errors import (
    ConnectError,
    ConnectionLost,
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
from .future import JobFuture
from .rpc_budget import RpcBudget
from .session import SlurmSession
from .slurm.states import JobState
from .spec import JobSpec

__all__ = [
    "ConnectError",
    "ConnectionLost",
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
    "SlurmSession",
    "SubmissionError",
]
