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
from .one_time_codes import terminal_prompt, totp, totp_answers
from .rpc_budget import RpcBudget
from .session import SlurmSession
from .slurm.release import ClusterInfo
from .slurm.states import JobState
from .spec import JobSpec
from .transport.kbdint import KbdintHandler

__all__ = [
    "ClusterInfo",
    "ConnectError",
    "ConnectionLost",
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
    "KbdintHandler",
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
    "terminal_prompt",
    "totp",
    "totp_answers",
]
