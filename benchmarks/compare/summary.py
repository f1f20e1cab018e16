"""From raw runs to one row per contender: medians, ratios to the limit, the floor and the raw run."""

from __future__ import annotations

import statistics
from typing import Any

from .citizenship import in_jobs
from .contenders import Contender

LIMIT, FLOOR, RAW = "sbatch-8", "sbatch-1", "sbatch-array"


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r["result"]]


def _of(runs: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["measure"] == measure or measure in r["provides"]]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _p4_seconds(runs: list[dict[str, Any]], key: str, n: int) -> float | None:
    return _median(
        [
            r["result"]["seconds"]
            for r in _ok(_of(runs, "p4"))
            if r["contender"] == key and r["params"]["n"] == n
        ]
    )


def summarize(contenders: list[Contender], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [row(c, [r for r in runs if r["contender"] == c.key]) for c in contenders]
    limit = next((r["p1"] for r in rows if r["key"] == LIMIT), None)
    floor = next((r["p3"] for r in rows if r["key"] == FLOOR), None)
    for r in rows:
        r["p1_to_limit"] = r["p1"] / limit if r["p1"] is not None and limit else None
        r["p3_minus_floor"] = r["p3"] - floor if r["p3"] is not None and floor is not None else None
        raw = _p4_seconds(runs, RAW, r["p4_jobs"]) if r["p4_jobs"] else None
        r["p4_raw_seconds"] = raw
        r["p4_raw_to_this"] = raw / r["p4"] if raw and r["p4"] else None
    return rows


def row(contender: Contender, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = _ok(runs)
    p1 = _of(ok, "p1")
    p2 = _of(ok, "p2")
    p3 = [s for r in _of(ok, "p3") for s in r["result"]["samples"]]
    # The largest P4 the contender ran is its P4 (the raw run also runs the plugin's smaller N).
    p4_runs = _of(ok, "p4")
    p4_jobs = max((r["params"]["n"] for r in p4_runs), default=None)
    p4 = [r for r in p4_runs if r["params"]["n"] == p4_jobs]
    # Client cost and citizenship over a whole job life where the contender ran one, else over P1.
    costly = p4 or p1 or _of(ok, "p3")
    jobs = [r["result"]["jobs"] for r in costly]
    per_job = [1000 * r["result"]["cpu_seconds"] / r["result"]["jobs"] for r in costly if r["result"]["jobs"]]
    cit = [r["citizenship"] for r in costly]
    errors = [r["result"]["error"] for r in runs if "error" in r["result"]]
    if contender.unavailable is not None:
        errors = [contender.unavailable]
    failed_jobs = sum(r["result"].get("failed", 0) for r in ok)
    first_job_error = next((e for r in ok for e in r["result"].get("errors", [])), None)
    return {
        "key": contender.key,
        "label": contender.label,
        "p1": _median([r["result"]["per_second"] for r in p1]),
        "p1_jobs": p1[0]["result"]["jobs"] if p1 else None,
        "p1_runs": len(p1),
        "p2": _median([r["result"]["per_second"] for r in p2]),
        "p2_items": p2[0]["result"]["jobs"] if p2 else None,
        "p3": _median(p3),
        "p3_samples": len(p3),
        "p4": _median([r["result"]["seconds"] for r in p4]),
        "p4_jobs": p4_jobs,
        "cpu_ms_per_job": _median(per_job),
        "peak_rss_mb": max((r["result"].get("peak_rss_mb", 0.0) for r in costly), default=None),
        "cost_from": costly[0]["measure"] if costly else None,
        "ssh_connections_per_run": _median([c["ssh_connections"] for c in cit]),
        "ssh_connections_per_1000": _median(
            [1000 * c["ssh_connections"] / j for c, j in zip(cit, jobs, strict=True) if j]
        ),
        "rpcs_per_1000": _median(
            [1000 * (c["rpcs_job_user"] - in_jobs(c)) / j for c, j in zip(cit, jobs, strict=True) if j]
        ),
        "srun_rpcs_per_1000": _median([1000 * in_jobs(c) / j for c, j in zip(cit, jobs, strict=True) if j]),
        "job_info_rpcs_per_1000": _median(
            [1000 * c["rpcs_job_info"] / j for c, j in zip(cit, jobs, strict=True) if j]
        ),
        "cost_jobs": jobs[0] if jobs else None,
        "refusals": sum(r["citizenship"]["sshd_refusals"] + r["result"].get("refused", 0) for r in runs),
        "failed_jobs": failed_jobs,
        "failed_runs": len(errors),
        "error": errors[0] if errors else first_job_error,
        "runs": len(runs),
        "unavailable": contender.unavailable,
        "bytes_per_future": _median([r["result"]["bytes_per_future"] for r in _of(ok, "memory")]),
        "memory_futures": next((r["result"]["jobs"] for r in _of(ok, "memory")), None),
        "memory_seconds": _median([r["result"]["seconds"] for r in _of(ok, "memory")]),
        "memory_peak_rss_mb": max((r["result"]["peak_rss_mb"] for r in _of(ok, "memory")), default=None),
    }


def summarize_rtts(
    contenders: list[Contender], runs: list[dict[str, Any]]
) -> dict[int, list[dict[str, Any]]]:
    """One table per RTT (runs of results files made before RTTs were measured count as 0 ms).

    At an RTT above 0 only the contenders that connect over SSH ran again; the login-node references
    (the limit, the floor, the raw array) are those of the same run at 0 ms, as they cross no network.
    """
    rtts = sorted({r.get("rtt_ms", 0) for r in runs} | {0})
    references = (LIMIT, FLOOR, RAW)
    tables: dict[int, list[dict[str, Any]]] = {}
    for rtt in rtts:
        at = [r for r in runs if r.get("rtt_ms", 0) == rtt]
        if rtt == 0:
            tables[rtt] = summarize(contenders, at)
            continue
        ran = {r["contender"] for r in at}
        chosen = [c for c in contenders if c.key in references or c.key in ran]
        base = [r for r in runs if r.get("rtt_ms", 0) == 0 and r["contender"] in references]
        tables[rtt] = summarize(chosen, base + at)
    return tables
