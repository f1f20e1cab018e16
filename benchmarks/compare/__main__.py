"""``python -m benchmarks.compare [--quick|--full] [--rtt 0,50] [--slurm 24.11]``: every contender, one
cluster, one run.

``--rtt`` lists round-trip times in milliseconds (default 0): at each one above 0 the contenders that
connect over SSH run again through a latency proxy (:mod:`benchmarks.compare.latency_proxy`), and the
report has a table per RTT. ``--slurm 24.11`` runs the same table against the local cluster of that
release (its own state directory and Debian root); its jobs run the root's Python 3.13, so the benchmark
runs on Python 3.13 too, and a contender that cannot run there is reported with the reason instead of
numbers.

Quick mode (the default) runs P1 with 500 jobs and finishes in under 5 minutes on 2 cores once the
contenders' venvs exist (the first run makes them, a few minutes more); full mode runs P1 with 2000 jobs,
P4 with 1000 and more repeats: about half an hour, going by the quick run's per-run times. See
:mod:`benchmarks.compare.modes`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from benchmarks.job_venvs import inside
from slurmbatch.testing import ClusterSettings, LocalCluster

from . import cluster as local
from .contenders import Contender, Context, contenders
from .endpoints import endpoints, parse_rtts
from .environments import Environments, job_python_minor, prepare
from .measurements import PHASES, run_all
from .modes import FULL, QUICK
from .netem import probe
from .report import write
from .source import state
from .summary import summarize_rtts

SLURMBATCH_MAX_CONNECTIONS = 2  # SlurmSession's default, which every slurmbatch contender uses


def versions(cluster: ClusterSettings, envs: Environments) -> dict[str, str]:
    def of(python: Path | None, package: str, root: Path | None = None) -> str:
        if python is None:
            return "not installed"
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        argv = inside(root, [str(python), "-c", code])
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.strip() or "?"

    def here(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "job_python": job_python_minor(cluster),
        "slurmbatch": here("slurmbatch"),
        "asyncssh": here("asyncssh"),
        "covalent": here("covalent"),
        "covalent-slurm-plugin": of(envs.csp_python, "covalent-slurm-plugin"),
        "submitit": of(envs.submitit_python, "submitit", cluster.root_dir()),
        "slurm": local.slurm(cluster, "sbatch", "--version").strip(),
    }


def report_again(path: Path) -> int:
    """Summarize the raw runs of a results file again and rewrite its report (same date, same files)."""
    doc = json.loads(path.read_text())
    summary = doc.pop("summary")
    first = summary if isinstance(summary, list) else summary["0"]  # files from before RTTs were measured
    chosen = [Contender(row["key"], row["label"], (), row.get("unavailable")) for row in first]
    md, text = write(doc, summarize_rtts(chosen, doc["runs"]))
    print(text)
    print(f"written: {md}, {md.with_suffix('.json')}, {md.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_const", dest="mode", const=QUICK, help="the default")
    speed.add_argument("--full", action="store_const", dest="mode", const=FULL)
    parser.add_argument(
        "--slurm",
        choices=["22.05", "24.11"],
        default=local.HOST_RELEASE,
        help=f"the Slurm release of the benchmark's cluster (default {local.HOST_RELEASE}, the host's own); "
        "another release's jobs run its root's Python, so run the benchmark with that Python minor",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help=f"the benchmark's own cluster (default {local.DEFAULT_STATE_DIR}, with -<release> for another)",
    )
    parser.add_argument("--only", nargs="*", help="contender keys to run (default: all)")
    parser.add_argument(
        "--phases", nargs="*", choices=PHASES, help="measures to run (default: all of P1 to P4)"
    )
    parser.add_argument(
        "--p1-jobs", type=int, help="jobs per P1 run of the fast contenders (default: the mode's)"
    )
    parser.add_argument("--p2-items", type=int, help="items per P2 run (default: the mode's)")
    parser.add_argument("--p3-samples", type=int, help="latency samples per P3 run (default: the mode's)")
    parser.add_argument(
        "--futures", type=int, help="memory: map this many held items and trace their futures (default: not)"
    )
    parser.add_argument(
        "--results-name", default="", metavar="NAME", help="write results/NAME-<date>.* (default: <date>.*)"
    )
    parser.add_argument(
        "--rtt",
        type=parse_rtts,
        default=[0],
        metavar="MS[,MS...]",
        help="round-trip times to measure the SSH contenders at, in ms (default 0: loopback only)",
    )
    parser.add_argument("--stop", action="store_true", help="stop the benchmark's cluster at the end")
    parser.add_argument(
        "--report-only", type=Path, metavar="JSON", help="write the report again from a results file"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report_again(args.report_only)
    mode = args.mode or QUICK
    state_dir = args.state_dir or local.state_dir_for(args.slurm)
    overrides = {
        "p1_jobs": args.p1_jobs,
        "p2_items": args.p2_items,
        "p3_samples": args.p3_samples,
        "futures": args.futures,
    }
    mode = attrs.evolve(mode, **{k: v for k, v in overrides.items() if v})
    started = time.perf_counter()
    cluster = local.start(state_dir, args.slurm)
    client, jobs = f"{sys.version_info.major}.{sys.version_info.minor}", job_python_minor(cluster)
    if jobs != client:
        # Every contender's pickles cross from this interpreter to the jobs' (covalent's too).
        parser.error(
            f"the jobs of the Slurm {args.slurm} cluster run Python {jobs}, and this is Python {client}: "
            f"run the benchmark with Python {jobs} (e.g. a venv of /root/.pyenv/versions/{jobs}.*/bin/python)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="compare-bench-"))
    try:
        envs = prepare(cluster, scratch, args.slurm)
        setup = time.perf_counter() - started
        print(f"cluster and environments ready in {setup:.0f} s", flush=True)
        chosen = [
            attrs.evolve(c, unavailable=envs.unavailable.get(c.key))
            for c in contenders(cluster, mode)
            if not args.only or c.key in args.only
        ]
        netem = probe()
        rtts = sorted(set(args.rtt) | {0})
        with endpoints(cluster, rtts, scratch) as where:
            ctx = Context(cluster, envs, mode, where[0])
            load_before, source_before = os.getloadavg(), state()
            runs = run_all(ctx, chosen, where, lambda line: print(line, flush=True), args.phases or PHASES)
            load_after, source_after = os.getloadavg(), state()
        tables = summarize_rtts(chosen, runs)
        doc: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "name": args.results_name,
            "command": "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seconds": time.perf_counter() - started,
            "setup_seconds": setup,
            "mode": attrs.asdict(mode),
            "cluster": {**cluster.as_dict(), "max_startups": local.OPTIONS.max_startups},
            "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
            "slurm_release": args.slurm,
            "versions": versions(cluster, envs),
            "source": {"start": source_before, "end": source_after},
            "max_connections": SLURMBATCH_MAX_CONNECTIONS,
            "netem": netem,
            "rtts_ms": rtts,
            "contenders": [{"key": c.key, "label": c.label, "unavailable": c.unavailable} for c in chosen],
            "runs": runs,
        }
        md, text = write(doc, tables)
        print("\n" + text)
        print(f"written: {md}, {md.with_suffix('.json')}, {md.with_suffix('.png')}")
    finally:
        local.drain(cluster)
        local.remove_workdirs(cluster)
        shutil.rmtree(scratch, ignore_errors=True)
        if args.stop:
            LocalCluster(state_dir, local.options(args.slurm)).down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
