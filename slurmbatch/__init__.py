"""slurmbatch: run Python functions as Slurm jobs over SSH, from plain code, asyncio or trio.

```python
with SlurmExecutor("login.cluster.org", user="me") as executor:
    print(executor.submit(simulate, 1.0, 2.0).result())

async with SlurmSession("login.cluster.org", user="me") as session:
    future = await session.submit(simulate, (1.0, 2.0), JobSpec(options={"time": "00:10:00"}))
    print(await future)
```
"""

import warnings as _warnings

with _warnings.catch_warnings():
    # asyncssh names cryptography's DSA types at import, which warns once per process on every command
    # line; slurmbatch never uses DSA keys' deprecated parts, and the warning is no concern of its users.
    _warnings.filterwarnings("ignore", message="DSA is deprecated")
    import asyncssh as _asyncssh  # noqa: F401

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
from .checkpointable import Checkpointable, ResumeCall
from .executor import SlurmExecutor
from .future import JobFuture
from .one_time_codes import terminal_prompt, totp, totp_answers
from .rpc_budget import RpcBudget
from .session import SlurmSession
from .slurm.release import ClusterInfo
from .slurm.states import JobState
from .spec import JobSpec
from .transport.kbdint import KbdintHandler

#: The release of this package; the one place it is written (the build reads it from here).
__version__ = "0.1.0"

__all__ = [
    "Checkpointable",
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
    "KbdintHandler",
    "PayloadError",
    "RemoteEnvironmentError",
    "RemoteError",
    "ResumeCall",
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
