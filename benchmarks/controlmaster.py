"""P1a and P3 over an OpenSSH ControlMaster (transport="openssh") beside asyncssh, in one run.

``python -m benchmarks.controlmaster [--quick]`` starts a ControlMaster with the system ``ssh`` to the
local cluster's login node (the same sshd asyncssh connects to), then alternates, ``--repeats`` times:

- P1a: ``--jobs`` (500) concurrent held ``submit()`` calls of one function and spec (coalesced into
  arrays): jobs acknowledged per second (`benchmarks.submit_measures.submit_rate`);
- P3: ``--samples`` (10) trivial jobs, submit to result, each paired with the login-node floor
  (`benchmarks.latency_measures.latency`).

Over the master every command is one ``ssh -S`` process (no channel of a connection of ours) and files
travel over exec channels, so the difference is the price of the process per command.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from typing import Any

import anyio

from slurmbatch.testing import ClusterSettings, ControlMaster, LocalCluster

from .latency_measures import latency
from .submit_measures import RESULTS, login, submit_rate


def master_for(cluster: ClusterSettings) -> ControlMaster:
    """A ControlMaster logged in to the cluster's login node by the system ssh, with the job user's key."""
    return ControlMaster.start(
        host="127.0.0.1",
        port=cluster.port,
        user=cluster.user,
        known_hosts=cluster.known_hosts,
        login_argv=["ssh", "-F", cluster.ssh_config, cluster.ssh_alias],
        env=os.environ,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.controlmaster", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--state-dir", help="the local cluster's state directory (one of its own: no one else's scancel)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 40 jobs, 3 samples, no results file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.samples, args.repeats = 40, 3, 1
    cluster = LocalCluster(args.state_dir).up()
    login(cluster, "scancel --user $USER")
    master = master_for(cluster)
    transports: dict[str, dict[str, Any]] = {
        "asyncssh": {"transport": "asyncssh"},
        "openssh": {
            "transport": "openssh",
            "control_path": master.control_path,
            "ssh_config": master.client_config,
        },
    }
    runs: dict[str, dict[str, list[Any]]] = {name: {"p1a": [], "p3": []} for name in transports}
    try:
        for repeat in range(args.repeats):
            order = list(transports.items())
            for name, overrides in order if repeat % 2 == 0 else order[::-1]:
                p1a = functools.partial(submit_rate, cluster, args.jobs, distinct_specs=False, **overrides)
                runs[name]["p1a"].append(anyio.run(p1a))
                runs[name]["p3"].append(
                    anyio.run(functools.partial(latency, cluster, args.samples, **overrides))
                )
    finally:
        master.stop()
    print(
        f"| transport | P1a jobs/s ({args.jobs} submit()) | P3 s, median (floor) | P3 - floor, paired median |"
    )
    print("|---|---|---|---|")
    for name, measured in runs.items():
        p1a = statistics.median(run["per_second"] for run in measured["p1a"])
        p3 = statistics.median(run["p3"]["total"]["median"] for run in measured["p3"])
        floor = statistics.median(run["floor"]["total"]["median"] for run in measured["p3"])
        extra = statistics.median(run["p3_minus_floor_paired_median"] for run in measured["p3"])
        print(f"| {name} | {p1a:.0f} | {p3:.2f} ({floor:.2f}) | {extra:+.2f} |")
    if not args.quick:
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "args": vars(args),
            "runs": runs,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"controlmaster-{result['date'][:10]}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"raw results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
