"""What a session learns about the Slurm it talks to, from its first command. Pure.

Releases differ in what they print, not only in what they can do: squeue's `exit_code` column is a raw
wait status up to 23.02 and `code:signal` from 23.11 on; `AccountingStorageType` reads
`accounting_storage/none` in 22.05 and `(null)` in 24.11 without slurmdbd; 23.02 renamed the
`Reserved` state `Planned`. The parsers in `slurmbatch.slurm.parse` read every form; this module
records which release answered, so that users (and error reports) can see it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import attrs

__all__ = ["TESTED_RELEASES", "ClusterInfo"]

logger = logging.getLogger("slurmbatch")

#: The releases the test suite runs against (major.minor).
TESTED_RELEASES = ("22.05", "24.11")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@attrs.frozen
class ClusterInfo:
    """The cluster as the session found it when it opened (`session.cluster_info`).

    Attributes:
        slurm_version: `SLURM_VERSION` as `scontrol show config` reports it, e.g. `"24.11.5"`;
            `""` when the login node did not say.
        cluster_name: Slurm's `ClusterName`.
        accounting: Whether slurmdbd keeps job records and answered a query (`sacct` then knows jobs
            long gone from squeue); otherwise the session reads the job completion records, if any.
        accounting_answers: Whether `sacct` answered at all when the session opened.
        max_array_size: The largest array the cluster accepts (tasks 0 to `max_array_size - 1`).
        min_job_age: Seconds squeue still shows a finished job.
        parsable_cluster: Whether `sbatch --parsable` appends `;cluster` to job ids: None until the
            session's first submission tells.
    """

    slurm_version: str = ""
    cluster_name: str = ""
    accounting: bool = False
    accounting_answers: bool = False
    max_array_size: int = 1001
    min_job_age: int = 300
    parsable_cluster: bool | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, str], *, sacct_answers: bool = False) -> ClusterInfo:
        """Build it from `scontrol show config` lines (key -> value) and whether sacct answered."""
        storage = config.get("AccountingStorageType", "")
        return cls(
            slurm_version=config.get("SLURM_VERSION", ""),
            cluster_name=config.get("ClusterName", ""),
            accounting=storage == "accounting_storage/slurmdbd" and sacct_answers,
            accounting_answers=sacct_answers,
            max_array_size=_integer(config.get("MaxArraySize", ""), 1001),
            min_job_age=_integer(config.get("MinJobAge", "").split(" ")[0], 300),
        )

    @property
    def release(self) -> tuple[int, int] | None:
        """(major, minor) of `slurm_version`, or None if unknown."""
        match = _VERSION.match(self.slurm_version)
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def exit_code_format(self) -> str:
        """How squeue's `exit_code` column reads: `"wait status"` (up to 23.02) or `"code:signal"`."""
        release = self.release
        return "code:signal" if release is not None and release >= (23, 11) else "wait status"

    @property
    def tested(self) -> bool:
        """Whether this release is one the test suite runs against."""
        release = self.release
        return release is not None and f"{release[0]}.{release[1]:02d}" in TESTED_RELEASES

    def warn_if_untested(self, host: str) -> None:
        """Log a warning (never fail) for a release outside the tested ones."""
        if self.tested:
            return
        said = (
            f"Slurm {self.slurm_version}"
            if self.slurm_version
            else "a Slurm release that did not say its version"
        )
        logger.warning(
            "%s runs %s; slurmbatch is tested against Slurm %s. It reads the output forms of every "
            "release it knows, but if jobs are reported wrongly, please report it with `scontrol show "
            "config` attached.",
            host,
            said,
            " and ".join(TESTED_RELEASES),
        )


def _integer(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
