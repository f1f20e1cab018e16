"""``python -m benchmarks.compare [--quick|--full] [--slurm 24.11]``: every contender, one cluster, one run.

``--slurm 24.11`` runs the same table against the local cluster of that release (its own state
directory and Debian root); its jobs run the root's Python 3.13, so the benchmark runs on Python 3.13
too, and a contender that cannot run there is reported with the reason instead of numbers.

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
from .environments import Environments, job_python_minor, prepare
from .measurements import run_all
from .modes import FULL, QUICK
from .netem import probe
from .report import write
from .source import state
from .summary import summarize

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
    chosen = [Contender(row["key"], row["label"], (), row.get("unavailable")) for row in doc.pop("summary")]
    md, text = write(doc, summarize(chosen, doc["runs"]))
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
    parser.add_argument("--stop", action="store_true", help="stop the benchmark's cluster at the end")
    parser.add_argument(
        "--report-only", type=Path, metavar="JSON", help="write the report again from a results file"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report_again(args.report_only)
    mode = args.mode or QUICK
    state_dir = args.state_dir or local.state_dir_for(args.slurm)
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
        ctx = Context(cluster, envs, mode)
        chosen = [
            attrs.evolve(c, unavailable=envs.unavailable.get(c.key))
            for c in contenders(cluster, mode)
            if not args.only or c.key in args.only
        ]
        netem = probe()
        load_before, source_before = os.getloadavg(), state()
        runs = run_all(ctx, chosen, lambda line: print(line, flush=True))
        load_after, source_after = os.getloadavg(), state()
        rows = summarize(chosen, runs)
        doc: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
            "contenders": [{"key": c.key, "label": c.label, "unavailable": c.unavailable} for c in chosen],
            "runs": runs,
        }
        md, text = write(doc, rows)
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
