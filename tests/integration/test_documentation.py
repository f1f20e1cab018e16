"""The README's Python examples run, as written, against the local cluster.

The only change made to them: the placeholder login node becomes the local cluster's sshd.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from slurmbatch import SlurmExecutor, SlurmSession
from slurmbatch.testing import ClusterSettings

from .conftest import session_options

pytestmark = pytest.mark.cluster

README = Path(__file__).parents[2] / "README.md"
PLACEHOLDER = 'SlurmSession("login.cluster.org", user="me")'
EXECUTOR_PLACEHOLDER = 'SlurmExecutor("login.cluster.org", user="me", spec=spec)'


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_examples_run(slurm_cluster: ClusterSettings, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks()
    # The sync API comes first, then the async one.
    assert len(blocks) >= 4 and EXECUTOR_PLACEHOLDER in blocks[0] and PLACEHOLDER in blocks[2]
    options = session_options(slurm_cluster)
    namespace: dict[str, Any] = {"__name__": "readme_examples", "_options": options}
    for block in blocks:
        code = block.replace(PLACEHOLDER, 'SlurmSession("127.0.0.1", **_options)').replace(
            EXECUTOR_PLACEHOLDER, 'SlurmExecutor("127.0.0.1", spec=spec, **_options)'
        )
        exec(compile(code, str(README), "exec"), namespace)  # the third block runs anyio.run(main)
    printed = capsys.readouterr().out.splitlines()
    squares = str([(x * x + x * x) ** 0.5 for x in range(10)])
    assert printed[:2] == ["5.0", squares]  # the executor's block
    assert printed[2].split()[1] == "5.0"
    assert printed[3] == squares

    with SlurmExecutor("127.0.0.1", **options) as executor:
        assert namespace["first_finished"](executor) in (1.0, 2.0, 3.0)

    async def later_examples() -> None:
        async with SlurmSession("127.0.0.1", **options) as session:
            assert await namespace["fan_out"](session) == [1.0, 2.0, 3.0]
            await namespace["failures"](session)
            assert await namespace["chain"](session) == 18.0

    anyio.run(later_examples)
    assert "remote traceback:" in capsys.readouterr().out
