"""The comparison benchmark's report of a contender that cannot run on a cluster's Slurm release: it keeps
its row, with the reason, and no numbers."""

from __future__ import annotations

from benchmarks.compare.contenders import Contender, Task
from benchmarks.compare.report import goals, table
from benchmarks.compare.summary import summarize

REASON = "not available on 24.11: fetching wheels of covalent==0.240.0 for Python 3.13 failed: no matching distribution"


def _run(key: str, per_second: float) -> dict[str, object]:
    return {
        "contender": key,
        "measure": "p1",
        "provides": [],
        "params": {"n": 10},
        "result": {"jobs": 10, "per_second": per_second, "cpu_seconds": 0.1},
        "citizenship": {
            "ssh_connections": 1,
            "sshd_refusals": 0,
            "rpcs_job_user": 10,
            "rpcs_job_info": 0,
            "rpcs_by_type": {},
        },
    }


def test_an_unavailable_contender_keeps_its_row_with_the_reason() -> None:
    chosen = [
        Contender("sbatch-8", "plain sbatch, 8 loops", (Task("p1", "login_sbatch", {}),)),
        Contender("csp", "covalent-slurm-plugin 0.18 run()", (Task("p4", "csp_driver", {}),), REASON),
    ]
    rows = summarize(chosen, [_run("sbatch-8", 250.0)])
    csp = next(r for r in rows if r["key"] == "csp")
    assert csp["unavailable"] == REASON
    assert csp["error"] == REASON
    assert csp["p1"] is None and csp["p4"] is None
    line = next(line for line in table(rows).splitlines() if "covalent-slurm-plugin" in line)
    assert REASON in line
    assert "failed" not in line.replace(REASON, "")
    # The goal against the plugin is not measured, not met or failed.
    assert any(g.startswith("- not measured: P1 ≥ 30x covalent-slurm-plugin") for g in goals(rows, 2))


def test_an_available_contender_has_no_reason() -> None:
    rows = summarize([Contender("sbatch-8", "plain sbatch, 8 loops", ())], [_run("sbatch-8", 250.0)])
    assert rows[0]["unavailable"] is None
    assert rows[0]["error"] is None
    assert rows[0]["p1"] == 250.0
