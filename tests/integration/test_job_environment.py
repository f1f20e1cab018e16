"""What a job finds on the local cluster of each release, as on a real compute node: POSIX semaphores and
shared memory (``/dev/shm``) for ``multiprocessing``, which covalent's job side and many users' code need."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

from slurmbatch import SlurmSession
from slurmbatch.testing import ClusterSettings

from .conftest import session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def squares_in_processes(n: int) -> list[int]:
    import multiprocessing

    lock = multiprocessing.Lock()  # a POSIX semaphore in /dev/shm
    with lock, multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(abs, [-x * x for x in range(n)])


async def test_a_job_uses_multiprocessing(slurm_cluster: ClusterSettings) -> None:
    async with SlurmSession(slurm_cluster.host, **session_options(slurm_cluster, journal=False)) as session:
        assert await (await session.submit(squares_in_processes, (4,))) == [0, 1, 4, 9]
