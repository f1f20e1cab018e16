"""remote_workdir forms the login node expands: ``$VAR/x`` and ``~user/x``."""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import pytest

from slurmbatch import RemoteEnvironmentError, SlurmSession
from slurmbatch._remote_layout import new_token
from slurmbatch.testing import ClusterSettings

from .conftest import login_shell

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.parametrize("form", ["$HOME/{name}", "${{HOME}}/{name}", "~{user}/{name}"])
async def test_a_workdir_named_through_a_variable_or_a_user_is_expanded_on_the_login_node(
    slurm_cluster: ClusterSettings, session_kwargs: dict[str, Any], form: str
) -> None:
    name = f"sb-form-{new_token()}"
    home = login_shell(slurm_cluster, 'printf %s "$HOME"')
    workdir = form.format(name=name, user=slurm_cluster.user)
    try:
        async with SlurmSession("127.0.0.1", **{**session_kwargs, "remote_workdir": workdir}) as session:
            assert session._layout.workdir == f"{home}/{name}"
            assert await (await session.submit(add, (2, 3))) == 5
    finally:
        login_shell(slurm_cluster, f"rm -rf -- {home}/{name}")


async def test_an_unset_workdir_variable_is_named(session_kwargs: dict[str, Any]) -> None:
    options = {**session_kwargs, "remote_workdir": "$SB_NOT_SET_ANYWHERE/x"}
    with pytest.raises(RemoteEnvironmentError, match=r"\$SB_NOT_SET_ANYWHERE, which is not set"):
        async with SlurmSession("127.0.0.1", **options):
            pass
