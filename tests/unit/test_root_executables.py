"""The program a daemon in another release's root runs, seen from the host: its links followed there.

`LocalCluster.status()` and `down` compare it with `/proc/<pid>/exe`; Debian's alternatives make
`/usr/sbin/slurmctld` an absolute link, which the host would resolve to its own Slurm.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurmbatch.testing import ClusterError
from slurmbatch.testing._root import RELEASES, Root


def _root(path: Path) -> Root:
    release = RELEASES["24.11"]
    assert release is not None
    return Root(path, release, ())


def test_an_absolute_link_is_followed_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "etc" / "alternatives").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "slurmctld-wlm").touch()
    os.symlink("/etc/alternatives/slurmctld", tmp_path / "usr" / "sbin" / "slurmctld")
    os.symlink("/usr/sbin/slurmctld-wlm", tmp_path / "etc" / "alternatives" / "slurmctld")
    assert _root(tmp_path).executable("/usr/sbin/slurmctld") == tmp_path / "usr" / "sbin" / "slurmctld-wlm"


def test_relative_links_and_merged_usr_are_followed(tmp_path: Path) -> None:
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "sshd").touch()
    os.symlink("usr/sbin", tmp_path / "sbin")
    os.symlink("../sbin/sshd", tmp_path / "usr" / "sbin" / "sshd-link")
    root = _root(tmp_path)
    assert root.executable("/sbin/sshd") == tmp_path / "usr" / "sbin" / "sshd"
    assert root.executable("/usr/sbin/sshd-link") == tmp_path / "usr" / "sbin" / "sshd"


def test_a_loop_of_links_is_a_cluster_error(tmp_path: Path) -> None:
    os.symlink("/b", tmp_path / "a")
    os.symlink("/a", tmp_path / "b")
    with pytest.raises(ClusterError, match="loop of symbolic links"):
        _root(tmp_path).executable("/a")
