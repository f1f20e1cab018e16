"""Login users on another Slurm release's root: a login shell the root lacks is refused in plain words
(its packages are fixed when it is built), one it has is taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmbatch.testing import ClusterError
from slurmbatch.testing._login_users import ensure_root_shell
from slurmbatch.testing._root import RELEASES, Root


def _root(path: Path) -> Root:
    release = RELEASES["24.11"]
    assert release is not None
    return Root(path, release, ())


def test_a_shell_the_root_lacks_names_the_package_to_add(tmp_path: Path) -> None:
    with pytest.raises(
        ClusterError, match=r"no login shell /usr/bin/zsh\. Add zsh to that release's packages"
    ):
        ensure_root_shell(_root(tmp_path), "/usr/bin/zsh")


def test_a_shell_the_root_has_is_taken(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "tcsh").touch()
    ensure_root_shell(_root(tmp_path), "/usr/bin/tcsh")


def test_the_24_11_root_is_built_with_the_login_shells_the_tests_use() -> None:
    release = RELEASES["24.11"]
    assert release is not None
    assert {"tcsh", "openssh-sftp-server"} <= set(release.packages)
