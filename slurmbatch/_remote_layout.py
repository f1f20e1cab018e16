"""Where a session keeps its files in the remote work directory. Pure: paths only, no I/O.

```
W/runner-<sha12>.py        the job-side program, uploaded once per content
W/fn/<sha256>.pkl          pickled functions and large arguments, content-addressed: uploaded once
W/jobs/<token>.*           per job: .args.pkl, .sh, .out, .err, .ranks/ for multi-task jobs, and
                           .value.pkl for a large return value (kept apart, so that jobs it is
                           passed to read it on the cluster and the client fetches it only if asked)
W/results/<token>.pkl      the outcome; the only per-job file in results/, so one listing finds them all
```
Per-job files are flat, not one directory per job: creating a directory would cost one more SFTP round
trip per job.
"""

from __future__ import annotations

import secrets
from posixpath import join

import attrs

TOKEN_PREFIX = "sb-"


def new_token() -> str:
    """A client-made job token: unique, safe in paths and job names, and searchable in squeue/sacct."""
    return TOKEN_PREFIX + secrets.token_hex(8)


@attrs.frozen
class RemoteLayout:
    """Paths in the remote work directory ``workdir`` (absolute)."""

    workdir: str

    @property
    def functions_dir(self) -> str:
        return join(self.workdir, "fn")

    @property
    def jobs_dir(self) -> str:
        return join(self.workdir, "jobs")

    @property
    def results_dir(self) -> str:
        return join(self.workdir, "results")

    def runner(self, digest: str) -> str:
        return join(self.workdir, f"runner-{digest[:12]}.py")

    def function(self, digest: str) -> str:
        return join(self.functions_dir, f"{digest}.pkl")

    def arguments(self, token: str) -> str:
        return join(self.jobs_dir, f"{token}.args.pkl")

    def resume(self, token: str) -> str:
        """The call a checkpoint saved, which the requeued job runs instead of the original."""
        return join(self.jobs_dir, f"{token}.resume.pkl")

    def script(self, token: str) -> str:
        return join(self.jobs_dir, f"{token}.sh")

    def stdout(self, token: str) -> str:
        return join(self.jobs_dir, f"{token}.out")

    def stderr(self, token: str) -> str:
        return join(self.jobs_dir, f"{token}.err")

    def value(self, token: str) -> str:
        """Where the runner puts a large return value of job ``token`` (its outcome then points here)."""
        return join(self.jobs_dir, f"{token}.value.pkl")

    def fence(self, batch: str) -> str:
        """The directory that makes submission batch ``batch`` run at most once (and keeps its replies)."""
        return join(self.jobs_dir, f"{batch}.batch")

    def rank_dir(self, token: str) -> str:
        return join(self.jobs_dir, f"{token}.ranks")

    def result(self, token: str) -> str:
        return join(self.results_dir, f"{token}.pkl")

    @staticmethod
    def token_of_result(name: str) -> str | None:
        """The token of a file name listed in results/, or None for anything else (the runner's temp files)."""
        if name.startswith(TOKEN_PREFIX) and name.endswith(".pkl"):
            return name[: -len(".pkl")]
        return None
