"""The outputs: ``benchmarks/results/<date>.json`` (every raw sample), ``<date>.md`` (a table with
medians and ratios per RTT, the contenders over SSH across RTTs, the goals) and ``<date>.png``
(throughput per contender, a column of panels per RTT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cluster import HOST_RELEASE
from .source import describe

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}".replace(",", " ")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "contender",
        "P1 jobs/s (N)",
        "P1 ÷ limit",
        "P2 tasks/s (N)",
        "P3 s (- floor)",
        "P4 s for N jobs (raw ÷ this)",
        "client CPU ms/job",
        "client peak RSS MB",
        "SSH conn. per run (per 1000 jobs)",
        "client RPCs per 1000 jobs (job-info)",
        "srun RPCs in jobs per 1000 jobs",
        "refusals",
        "errors",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p3 = "n/a"
        if r["p3"] is not None:
            if r["key"] == "sbatch-1":
                p3 = f"{r['p3']:.2f} (floor)"
            elif r["p3_minus_floor"] is None:  # the floor's contender was left out (--only)
                p3 = f"{r['p3']:.2f} (no floor)"
            else:
                p3 = f"{r['p3']:.2f} ({r['p3_minus_floor']:+.2f})"
        p4 = "n/a"
        if r["p4"] is not None:
            p4 = f"{r['p4']:.1f} for {r['p4_jobs']}"
            p4 += " (raw)" if r["key"] == "sbatch-array" else f" ({_ratio(r['p4_raw_to_this'])})"
        ssh = "n/a"
        if r["ssh_connections_per_run"] is not None:
            ssh = f"{_num(r['ssh_connections_per_run'])} ({_num(r['ssh_connections_per_1000'])})"
        rpcs = "n/a"
        if r["rpcs_per_1000"] is not None:
            rpcs = f"{_num(r['rpcs_per_1000'])} ({_num(r['job_info_rpcs_per_1000'])})"
        errors = "none"
        if r.get("unavailable"):
            errors = r["unavailable"][:240].replace("|", "/").replace("\n", " ")
        elif r["error"]:
            what = (
                f"{r['failed_runs']} failed runs" if r["failed_runs"] else f"{r['failed_jobs']} failed jobs"
            )
            errors = f"{what}: {r['error'][:160]}".replace("|", "/").replace("\n", " ")
        cells = [
            r["label"],
            f"{_num(r['p1'])} ({r['p1_jobs']})" if r["p1"] is not None else "n/a",
            _ratio(r["p1_to_limit"]),
            f"{_num(r['p2'])} ({r['p2_items']})" if r["p2"] is not None else "n/a",
            p3,
            p4,
            _num(r["cpu_ms_per_job"], 1),
            _num(r["peak_rss_mb"]),
            ssh,
            rpcs,
            _num(r["srun_rpcs_per_1000"]),
            str(r["refusals"]),
            errors,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]], max_connections: int) -> list[str]:
    """The targets for slurmbatch, each with the number measured against it."""
    by = {r["key"]: r for r in rows}

    def val(key: str, field: str) -> float | None:
        return by.get(key, {}).get(field)

    def check(ok: bool | None, text: str) -> str:
        return f"- {'met' if ok else ('not met' if ok is not None else 'not measured')}: {text}"

    one, distinct = val("slurmbatch-submit", "p1_to_limit"), val("slurmbatch-distinct", "p1_to_limit")
    sb, csp = val("slurmbatch-submit", "p1"), val("csp", "p1")
    vs_csp = sb / csp if sb and csp else None
    p2 = val("slurmbatch-map", "p2")
    p3 = val("slurmbatch-submit", "p3_minus_floor")
    p4 = [val(k, "p4_raw_to_this") for k in ("slurmbatch-map", "slurmbatch-submit")]
    conns = [
        val(k, "ssh_connections_per_run")
        for k in ("slurmbatch-submit", "slurmbatch-map", "slurmbatch-covalent")
    ]
    refusals = sum(
        int(val(k, "refusals") or 0)
        for k in ("slurmbatch-submit", "slurmbatch-distinct", "slurmbatch-map", "slurmbatch-covalent")
    )
    known_conns = [c for c in conns if c is not None]
    return [
        check(None if one is None else one >= 3, f"P1, one function and spec, ≥ 3x the limit: {_ratio(one)}"),
        check(
            None if distinct is None else distinct >= 0.9,
            f"P1, distinct specs, ≥ 0.9x the limit: {_ratio(distinct)}",
        ),
        check(None if vs_csp is None else vs_csp >= 30, f"P1 ≥ 30x covalent-slurm-plugin: {_ratio(vs_csp)}"),
        check(None if p2 is None else p2 >= 5000, f"P2 ≥ 5 000 tasks/s: {_num(p2)}"),
        check(
            None if p3 is None else p3 <= 0.1,
            f"P3 ≤ floor + 0.1 s: floor {'+' if (p3 or 0) >= 0 else ''}{_num(p3, 2)} s",
        ),
        check(
            None if None in p4 else all(x is not None and x >= 0.9 for x in p4),
            f"P4 ≥ 0.9x raw: map {_ratio(p4[0])}, submit {_ratio(p4[1])}",
        ),
        check(
            None if not known_conns else max(known_conns) <= max_connections,
            f"SSH connections per run ≤ max_connections ({max_connections}): "
            + ", ".join(_num(c) for c in conns),
        ),
        check(refusals == 0, f"0 refusals: {refusals}"),
    ]


def rtt_goals(tables: dict[int, list[dict[str, Any]]], rtt: int) -> list[str]:
    """The targets at an RTT above 0, each with the number measured against it."""
    at = {r["key"]: r for r in tables[rtt]}
    home = {r["key"]: r for r in tables[0]}

    def check(ok: bool | None, text: str) -> str:
        return f"- {'met' if ok else ('not met' if ok is not None else 'not measured')}: {text}"

    p1, p1_home = at.get("slurmbatch-submit", {}).get("p1"), home.get("slurmbatch-submit", {}).get("p1")
    kept = p1 / p1_home if p1 and p1_home else None
    p3 = at.get("slurmbatch-submit", {}).get("p3_minus_floor")
    bound = 2 * rtt / 1000 + 0.1
    p2, items = at.get("slurmbatch-map", {}).get("p2"), at.get("slurmbatch-map", {}).get("p2_items")
    map_seconds = items / p2 if p2 and items else None
    csp = at.get("csp", {})
    return [
        check(None if kept is None else kept >= 0.8, f"P1a ≥ 0.8x its own 0 ms figure: {_ratio(kept)}"),
        check(
            None if p3 is None else p3 <= bound,
            f"P3 ≤ floor + 2 RTT + 0.1 s (+{bound:.2f} s): floor {'+' if (p3 or 0) >= 0 else ''}{_num(p3, 2)} s",
        ),
        check(
            None if map_seconds is None else map_seconds <= 2,
            f"map of {_num(items)} ≤ 2 s: {_num(map_seconds, 2)} s",
        ),
        check(
            None if not csp else csp.get("p3") is not None and not csp.get("failed_runs"),
            "covalent-slurm-plugin measured the same way: "
            + (
                "not run"
                if not csp
                else f"P3 {_num(csp.get('p3'), 2)} s, {csp.get('failed_runs')} failed runs"
            ),
        ),
    ]


def across_rtts(tables: dict[int, list[dict[str, Any]]]) -> str:
    """The contenders that ran at more than one RTT, one line per contender and RTT.

    "Round trips" divides the time an RTT added (against the same contender at 0 ms) by that RTT: how
    many sequential round trips lie on the path of one latency sample (P3), or of one ``map`` (P2).
    """
    home = {r["key"]: r for r in tables[0]}
    keys = [r["key"] for r in tables[max(tables)] if r["key"] in home]
    head = [
        "contender",
        "RTT ms",
        "P1 jobs/s",
        "P2 tasks/s (round trips)",
        "P3 s (- floor) (round trips)",
        "P4 s (raw ÷ this)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def trips(added: float | None, rtt: int) -> str:
        return f" ({added / (rtt / 1000):.1f})" if rtt and added is not None else ""

    for key in keys:
        if key in ("sbatch-1", "sbatch-8", "sbatch-array"):
            continue
        base = home[key]
        for rtt, rows in tables.items():
            r = next((x for x in rows if x["key"] == key), None)
            if r is None:
                continue
            p2 = _num(r["p2"])
            if r["p2"] and base["p2"] and r["p2_items"]:
                p2 += trips(r["p2_items"] / r["p2"] - r["p2_items"] / base["p2"], rtt)
            p3 = "n/a" if r["p3"] is None else f"{r['p3']:.2f}"
            if r["p3_minus_floor"] is not None:
                p3 += f" ({r['p3_minus_floor']:+.2f})"
            if r["p3"] is not None and base["p3"] is not None:
                p3 += trips(r["p3"] - base["p3"], rtt)
            p4 = "n/a" if r["p4"] is None else f"{r['p4']:.1f} ({_ratio(r['p4_raw_to_this'])})"
            lines.append(f"| {r['label']} | {rtt} | {_num(r['p1'])} | {p2} | {p3} | {p4} |")
    return "\n".join(lines)


def markdown(doc: dict[str, Any], tables: dict[int, list[dict[str, Any]]], chart: Path) -> str:
    mode, cluster, netem = doc["mode"], doc["cluster"], doc["netem"]
    slurm = doc["versions"].get("slurm", "?")
    rows = tables[0]
    parts = [
        f"Run {doc['date']} (`{doc['command']}`, {mode['name']} mode, {doc['seconds']:.0f} s) against "
        f"{slurm}, client Python {doc['versions'].get('python', '?')}; "
        f"local cluster: {len(cluster['nodes'])} nodes advertising {cluster['cpus_per_node']} CPUs each on "
        f"{doc['machine']['cpus']} cores, sshd MaxSessions {cluster['max_sessions']}, MaxStartups "
        f"{cluster['max_startups']}; load average {doc['machine']['load_before'][0]:.1f} before, "
        f"{doc['machine']['load_after'][0]:.1f} after. Medians of "
        + ", ".join(f"{k.upper()} {v}" for k, v in mode["repeats"].items())
        + " runs per contender.",
        "",
    ]
    for rtt, at in tables.items():
        if len(tables) > 1:
            parts += [f"### RTT {rtt} ms" + (" (loopback)" if rtt == 0 else " (latency proxy)"), ""]
        parts += [table(at), ""]
    if len(tables) > 1:
        parts += ["### The contenders over SSH across RTTs", "", across_rtts(tables), ""]
    parts += [
        "P1: jobs acknowledged (job id known) per second; P1 and P2 jobs are submitted held. The limit is 8 "
        "plain sbatch loops on the login node. covalent-slurm-plugin and slurmbatch_covalent cannot hold a "
        "task, so their P1 counts acknowledgements during their P4 run. P3: one trivial job, submit to result "
        "in hand, against plain sbatch + squeue every 10 ms on the login node (the floor). P4: N trivial jobs, "
        "submit to all results, against a plain sbatch array of as many `python -c pass` tasks (raw). Client "
        "cost, SSH connections and RPCs are taken from the P4 run where a contender has one, else from P1. "
        "Client RPCs: those the job user sent to slurmctld (sdiag), less those of `srun` inside the jobs "
        "(covalent-slurm-plugin, submitit and slurmbatch_covalent run each task through srun by default), "
        "which are counted apart. Refusals: sshd's `no more sessions` and "
        "MaxStartups drops, and clients' `open failed`/connection-lost errors. At an RTT above 0 the "
        "contenders that connect over SSH go through a userspace TCP proxy that delays every chunk by half "
        "the RTT each way (the kernel has no netem: "
        + (netem.get("reason", "?") if not netem.get("available") else "netem would work here too")
        + "); the login-node references are those of the 0 ms runs.",
        "",
        "Goals for slurmbatch" + (" (0 ms)" if len(tables) > 1 else "") + ":",
        "",
        *goals(rows, doc["max_connections"]),
        "",
    ]
    for rtt in tables:
        if rtt:
            parts += [f"Goals at {rtt} ms RTT:", "", *rtt_goals(tables, rtt), ""]
    for r in rows:
        if r.get("bytes_per_future") is not None:
            parts += [
                f"Memory: `map` over {_num(r['memory_futures'])} held items took {_num(r['memory_seconds'], 1)} s; "
                f"{_num(r['bytes_per_future'])} bytes stay allocated per pending future (tracemalloc), client "
                f"peak RSS {_num(r['memory_peak_rss_mb'])} MB.",
                "",
            ]
    parts += [
        describe(doc["source"]["start"], doc["source"]["end"]) + "." if "source" in doc else "",
        "",
        f"![throughput per contender]({chart.name})",
    ]
    return "\n".join(parts) + "\n"


def chart(tables: dict[int, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rtts = list(tables)
    fig, grid = plt.subplots(
        2, len(rtts), figsize=(7.5 * len(rtts), 10), squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    for column, rtt in enumerate(rtts):
        rows = tables[rtt]
        limit = next((r["p1"] for r in rows if r["key"] == "sbatch-8"), None)
        for ax, field, title in (
            (grid[0][column], "p1", f"P1: jobs acknowledged per second, RTT {rtt} ms"),
            (grid[1][column], "p2", f"P2: map tasks acknowledged per second, RTT {rtt} ms"),
        ):
            shown = [
                r for r in rows if r[field] is not None or (field == "p1" and r["error"] and r["p2"] is None)
            ]
            size = "p1_jobs" if field == "p1" else "p2_items"
            labels = [
                f"{r['label']} (N={r[size] or '?'})" + ("  [a run failed]" if r["failed_runs"] else "")
                for r in shown
            ]
            values = [r[field] or 0.0 for r in shown]
            colors = ["#1f77b4" if r["key"].startswith("slurmbatch") else "#999999" for r in shown]
            y = range(len(shown))
            ax.barh(list(y), values, color=colors)
            ax.set_yticks(list(y), labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlim(left=1)
            ax.set_title(title, fontsize=10)
            for i, v in enumerate(values):
                if v:
                    ax.text(v, i, f" {v:,.0f}", va="center", fontsize=7)
            if field == "p1" and limit:
                ax.axvline(limit, color="#d62728", linestyle="--", linewidth=1)
                ax.text(limit, len(shown) - 0.4, " 8-loop limit", color="#d62728", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(doc: dict[str, Any], tables: dict[int, list[dict[str, Any]]]) -> tuple[Path, str]:
    """Write the JSON, the chart and the markdown; return the markdown's path and text.

    ``tables`` holds the rows of each RTT (milliseconds), 0 first.
    """
    RESULTS.mkdir(exist_ok=True)
    # A run against another Slurm release than the host's is kept beside that day's host run.
    release = doc.get("slurm_release")
    # (The release's dot would read as a file suffix: 2026-12-08-slurm-24-11.json.)
    suffix = f"-slurm-{release.replace('.', '-')}" if release and release != HOST_RELEASE else ""
    stem = RESULTS / ("-".join(part for part in (doc.get("name"), doc["date"][:10]) if part) + suffix)
    png = stem.with_suffix(".png")
    chart(tables, png)
    text = markdown(doc, tables, png)
    summary = {str(rtt): rows for rtt, rows in tables.items()}
    stem.with_suffix(".json").write_text(
        json.dumps({**doc, "summary": summary}, indent=1, default=str) + "\n"
    )
    md = stem.with_suffix(".md")
    md.write_text(text)
    return md, text
