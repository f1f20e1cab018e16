"""The contenders, what each measures, and how its driver is started.

Every contender submits the same trivial Python call (or, for plain sbatch, a trivial job: ``true``
when held, the job side's ``python -c pass`` when run). Jobs of P1 and P2 are submitted held, so that
nothing runs while submission is timed, and cancelled after the run; covalent-slurm-plugin and
slurmbatch_covalent cannot hold a task (``run()`` returns only with its result), so their P1 is taken
from their P4 run: acknowledgements while the jobs also run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import attrs

from slurmbatch.testing import ClusterSettings

from .cluster import workdir
from .endpoints import Endpoint
from .environments import Environments, isolated_covalent, login_node
from .modes import Mode

CHUNK = 1000  # the cluster's MaxArraySize is 1001: submitit does not split batches itself


@attrs.frozen
class Task:
    """One driver run: the measure it is for, the driver and its parameters."""

    measure: str
    driver: str
    params: dict[str, Any]
    provides: tuple[str, ...] = ()  # further measures read from the same run
    held: bool = False  # it leaves held jobs: cancel them after the run


@attrs.frozen
class Contender:
    key: str
    label: str
    tasks: tuple[Task, ...]
    unavailable: str | None = None  # why it cannot run on this cluster: it is reported, not run
    over_ssh: bool = False  # it reaches the login node over SSH: it runs at every RTT, not only at 0


@attrs.frozen
class Context:
    cluster: ClusterSettings
    envs: Environments
    mode: Mode
    endpoint: Endpoint  # where the SSH contenders connect: the sshd itself, or a proxy adding RTT


def contenders(cluster: ClusterSettings, mode: Mode) -> list[Contender]:
    m = mode
    submitit = {"workdir": workdir(cluster, "submitit")}
    sb = {"workdir": workdir(cluster, "slurmbatch")}
    return [
        Contender(
            "sbatch-1",
            "plain sbatch, 1 loop (login node)",
            (
                Task("p1", "login_sbatch", {"measure": "loops", "n": m.p1_jobs, "loops": 1}, held=True),
                Task("p3", "login_sbatch", {"measure": "floor", "samples": m.p3_samples}),
            ),
        ),
        Contender(
            "sbatch-8",
            "plain sbatch, 8 loops (login node): the limit",
            (Task("p1", "login_sbatch", {"measure": "loops", "n": m.p1_jobs, "loops": 8}, held=True),),
        ),
        Contender(
            "sbatch-array",
            "plain sbatch --array (login node): raw",
            (
                Task("p2", "login_sbatch", {"measure": "array_submit", "n": m.p2_items}, held=True),
                Task("p4", "login_sbatch", {"measure": "array_run", "n": m.p4_jobs}),
                Task("p4", "login_sbatch", {"measure": "array_run", "n": m.p4_plugin_jobs}),
            ),
        ),
        Contender(
            "ssh-per-job",
            "ssh host sbatch, a new connection per job",
            (
                Task("p1", "ssh_per_job", {"measure": "p1", "n": m.p1_slow_jobs}, held=True),
                Task("p3", "ssh_per_job", {"measure": "p3", "samples": m.p3_samples, **_wd(cluster, "ssh")}),
            ),
            over_ssh=True,
        ),
        Contender(
            "csp",
            "covalent-slurm-plugin 0.18 run()",
            (
                Task(
                    "p4",
                    "csp_driver",
                    {"measure": "run", "n": m.p4_plugin_jobs, **_wd(cluster, "csp")},
                    ("p1",),
                ),
                Task("p3", "csp_driver", {"measure": "p3", "samples": m.p3_samples, **_wd(cluster, "csp")}),
            ),
            over_ssh=True,
        ),
        Contender(
            "submitit-submit",
            "submitit 1.5 submit (login node)",
            (
                Task("p1", "submitit_driver", {"measure": "p1", "n": m.p1_slow_jobs, **submitit}, held=True),
                Task("p3", "submitit_driver", {"measure": "p3", "samples": m.p3_samples, **submitit}),
            ),
        ),
        Contender(
            "submitit-batch",
            "submitit 1.5 batch/array (login node)",
            (
                Task(
                    "p1",
                    "submitit_driver",
                    {"measure": "batch_p1", "n": m.p1_jobs, "chunk": CHUNK, **submitit},
                    held=True,
                ),
                Task(
                    "p2",
                    "submitit_driver",
                    {"measure": "p2", "n": m.p2_items, "chunk": CHUNK, **submitit},
                    held=True,
                ),
                Task("p4", "submitit_driver", {"measure": "p4", "n": m.p4_jobs, "chunk": CHUNK, **submitit}),
            ),
        ),
        Contender(
            "slurmbatch-submit",
            "slurmbatch submit(), one function and spec",
            (
                Task(
                    "p1",
                    "slurmbatch_driver",
                    {"measure": "p1", "n": m.p1_jobs, "distinct": False, **sb},
                    held=True,
                ),
                Task("p3", "slurmbatch_driver", {"measure": "p3", "samples": m.p3_samples, **sb}),
                Task("p4", "slurmbatch_driver", {"measure": "p4", "n": m.p4_jobs, "via": "submit", **sb}),
            ),
            over_ssh=True,
        ),
        Contender(
            "slurmbatch-distinct",
            "slurmbatch submit(), distinct specs",
            (
                Task(
                    "p1",
                    "slurmbatch_driver",
                    {"measure": "p1", "n": m.p1_jobs, "distinct": True, **sb},
                    held=True,
                ),
            ),
            over_ssh=True,
        ),
        Contender(
            "slurmbatch-map",
            "slurmbatch map()",
            (
                Task("p2", "slurmbatch_driver", {"measure": "p2", "n": m.p2_items, **sb}, held=True),
                Task("p4", "slurmbatch_driver", {"measure": "p4", "n": m.p4_jobs, "via": "map", **sb}),
                *(
                    [
                        Task(
                            "memory",
                            "slurmbatch_driver",
                            {"measure": "memory", "n": m.futures, **sb},
                            held=True,
                        )
                    ]
                    if m.futures
                    else []
                ),
            ),
            over_ssh=True,
        ),
        Contender(
            "slurmbatch-covalent",
            "slurmbatch_covalent run()",
            (
                Task(
                    "p4", "sbcov_driver", {"measure": "run", "n": m.p4_jobs, **_wd(cluster, "sbcov")}, ("p1",)
                ),
                Task(
                    "p3", "sbcov_driver", {"measure": "p3", "samples": m.p3_samples, **_wd(cluster, "sbcov")}
                ),
            ),
            over_ssh=True,
        ),
    ]


def _wd(cluster: ClusterSettings, name: str) -> dict[str, str]:
    return {"workdir": workdir(cluster, name)}


def invocation(ctx: Context, task: Task, run_id: str) -> tuple[list[str], dict[str, str] | None]:
    """The command line and environment of ``task``'s driver (``run_id`` names its scratch files)."""
    cluster, envs, end = ctx.cluster, ctx.envs, ctx.endpoint
    params = {
        "host": end.host,
        "port": end.port,
        "user": cluster.user,
        "key_file": cluster.key_file,
        "known_hosts": end.known_hosts,
        "ssh_config": end.ssh_config,
        "ssh_alias": end.ssh_alias,
        "python": cluster.python,
        **task.params,
    }
    script = str(envs.drivers / f"{task.driver}.py")
    scratch = envs.scratch / run_id
    if task.driver == "login_sbatch":
        return login_node(cluster, ["/usr/bin/python3", script, json.dumps(params)]), None
    if task.driver == "submitit_driver":
        assert envs.submitit_python is not None, "an unavailable contender is not run"
        return login_node(cluster, [str(envs.submitit_python), script, json.dumps(params)]), None
    if task.driver == "csp_driver":
        assert envs.csp_python is not None, "an unavailable contender is not run"
        params["bashrc"] = str(envs.csp_bashrc)
        env = isolated_covalent(scratch, home=end.csp_home)
        return [str(envs.csp_python), script, json.dumps(params)], env
    if task.driver == "sbcov_driver":
        params["results_dir"] = str(scratch / "results")
        return [sys.executable, script, json.dumps(params)], isolated_covalent(scratch)
    return [sys.executable, script, json.dumps(params)], dict(os.environ)
