"""Fixtures of the job-side runner's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from slurmbatch.payload import runner_source


@pytest.fixture
def runner_file(tmp_path: Path) -> Path:
    """The runner as the session uploads it, in a directory of its own."""
    path = tmp_path / "runner-0123456789ab.py"
    path.write_bytes(runner_source())
    return path


@pytest.fixture
def by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Pickle the test module's classes by value, as cloudpickle does for a user's ``__main__``."""
    module = request.module
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)
