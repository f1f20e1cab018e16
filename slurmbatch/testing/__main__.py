"""``python -m slurmbatch.testing up|down|status``: the local cluster from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._configs import ClusterOptions
from ._processes import ClusterError
from .cluster import DEFAULT_STATE_DIR, LocalCluster


def main(argv: list[str] | None = None, *, prog: str = "python -m slurmbatch.testing") -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog=prog, description="The local cluster: up, down or status.")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir",
        default=None,
        help=f"where the cluster keeps its files (default {DEFAULT_STATE_DIR}, with -24.11 for that release)",
    )
    parser.add_argument(
        "--slurm",
        choices=["22.05", "24.11"],
        default="22.05",
        help="Slurm release: 22.05 is the host's own; 24.11 runs in a Debian trixie root (default 22.05)",
    )
    parser.add_argument("--nodes", type=int, default=2, help="simulated nodes (default 2)")
    parser.add_argument("--cpus", type=int, default=16, help="CPUs each node advertises (default 16)")
    parser.add_argument("--max-sessions", type=int, default=10, help="sshd MaxSessions (default 10)")
    parser.add_argument("--max-startups", default="10:30:100", help="sshd MaxStartups (default 10:30:100)")
    parser.add_argument("--max-array-size", type=int, default=1001, help="Slurm MaxArraySize (default 1001)")
    parser.add_argument(
        "--slurmdbd", action="store_true", help="also run slurmdbd with MariaDB, so sacct works"
    )
    parser.add_argument("--json", action="store_true", help="print the settings as one JSON object")
    args = parser.parse_args(argv)
    options = ClusterOptions(
        nodes=args.nodes,
        cpus_per_node=args.cpus,
        max_sessions=args.max_sessions,
        max_startups=args.max_startups,
        max_array_size=args.max_array_size,
        slurmdbd=args.slurmdbd,
        slurm=args.slurm,
    )
    state_dir = args.state_dir or (
        DEFAULT_STATE_DIR
        if args.slurm == "22.05"
        else DEFAULT_STATE_DIR.with_name(f"{DEFAULT_STATE_DIR.name}-{args.slurm}")
    )
    cluster = LocalCluster(state_dir, options)
    try:
        if args.command == "up":
            started = time.monotonic()
            settings = cluster.up()
            if args.json:
                print(json.dumps(settings.as_dict()))
            else:
                print(
                    f"Local cluster up in {time.monotonic() - started:.1f} s: nodes {', '.join(settings.nodes)}"
                )
                print(f"Try: ssh -F {settings.ssh_config} {settings.ssh_alias} sinfo")
        elif args.command == "down":
            cluster.down()
            if not args.json:
                print("Local cluster stopped.")
        else:
            status = cluster.status()
            print(json.dumps(status, indent=None if args.json else 2))
            return 0 if status.get("running") else 3
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
