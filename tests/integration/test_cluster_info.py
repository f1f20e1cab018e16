"""What a session learns about the Slurm it talks to, on each release's real cluster."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

from slurmbatch import SlurmSession
from slurmbatch.testing import ClusterSettings
from slurmbatch.testing.pytest_plugin import TEST_OPTIONS

from .conftest import session_options

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def answer() -> int:
    return 42


async def test_the_session_knows_the_release_it_talks_to(slurm_cluster: ClusterSettings) -> None:
    async with SlurmSession(slurm_cluster.host, **session_options(slurm_cluster, journal=False)) as session:
        info = session.cluster_info
        assert info.slurm_version.startswith(TEST_OPTIONS.slurm) and info.tested
        assert info.cluster_name == slurm_cluster.cluster_name
        assert info.max_array_size == slurm_cluster.max_array_size
        assert info.min_job_age == 10  # the test clusters' MinJobAge
        assert info.accounting is False  # no slurmdbd: sacct reads the job completion records
        assert info.parsable_cluster is None  # not known before the first submission
        assert await (await session.submit(answer)) == 42
        assert session.cluster_info.parsable_cluster is False  # a single cluster: plain ids
