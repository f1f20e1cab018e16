"""Can this machine add 50 ms of round-trip time to the login node (network namespace + ``tc netem``)?

The probe tries exactly what the RTT variant would need, in a scratch network namespace that it removes
again, and reports the first thing that fails with the system's own words. The report carries the
probe's answer; the harness has no RTT variant of the runs (25 ms each way between the client and the
login node) yet, so where the probe passes the report says that the variant was not run.
"""

from __future__ import annotations

import gzip
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

NAMESPACE = "sbcompare-probe"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def _kernel_config(option: str) -> str | None:
    """The kernel's own line about ``option`` (``/proc/config.gz``), if it tells."""
    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            for line in config:
                if line.startswith((f"{option}=", f"# {option} ")):
                    return line.strip()
    except OSError:
        return None
    return None


def probe() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "kernel": platform.release(),
        "root": os.geteuid() == 0,
        "CONFIG_NET_SCH_NETEM": _kernel_config("CONFIG_NET_SCH_NETEM"),
        "CONFIG_MODULES": _kernel_config("CONFIG_MODULES"),
        "CONFIG_NET_NS": _kernel_config("CONFIG_NET_NS"),
        "CONFIG_VETH": _kernel_config("CONFIG_VETH"),
        "loadable_modules": Path("/proc/modules").exists(),
    }
    steps = [
        ("create a network namespace", ["ip", "netns", "add", NAMESPACE]),
        ("bring its loopback up", ["ip", "netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"]),
        (
            "add a 25 ms netem delay",
            [
                "ip",
                "netns",
                "exec",
                NAMESPACE,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "25ms",
            ],
        ),
    ]
    try:
        for what, argv in steps:
            try:
                done = _run(*argv)
            except OSError as exc:
                return {**facts, "available": False, "reason": f"cannot {what}: `{argv[0]}`: {exc}"}
            if done.returncode != 0:
                said = (done.stderr or done.stdout).strip().rstrip(".")
                reason = f"cannot {what}: `{' '.join(argv)}` said: {said}"
                if facts["CONFIG_NET_SCH_NETEM"] and "is not set" in facts["CONFIG_NET_SCH_NETEM"]:
                    reason += (
                        f". The kernel ({facts['kernel']}) is built without netem "
                        f"({facts['CONFIG_NET_SCH_NETEM']}) and without loadable modules "
                        f"({facts['CONFIG_MODULES'] or 'no /proc/modules'}), so sch_netem cannot be loaded either"
                    )
                return {**facts, "available": False, "reason": reason}
        return {**facts, "available": True, "reason": "netem works in a network namespace here"}
    finally:
        _run("ip", "netns", "del", NAMESPACE)
