"""Running one driver as a subprocess, bounded in time; its JSON result, or the error it ended with."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any


def run_driver(argv: list[str], env: dict[str, str] | None, timeout: float) -> dict[str, Any]:
    """Run ``argv``; return the JSON object it printed last, with ``wall_seconds`` of the whole process.

    A driver that fails, prints no result or runs past ``timeout`` gives ``{"error": ...}``: a failed
    contender is a result, never an exception.
    """
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"error": f"timed out after {timeout:.0f} s", "stderr": text}
    wall = time.perf_counter() - started
    result: dict[str, Any] | None = None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    if result is None:
        result = {"error": f"exit code {done.returncode}, no result printed", "stderr": done.stderr[-1500:]}
    elif done.returncode != 0 and "error" not in result:
        result["error"] = f"exit code {done.returncode}"
    if "error" in result and "stderr" not in result:
        result["stderr"] = done.stderr[-1500:]
    result["wall_seconds"] = wall
    return result
