"""Which slurmbatch the run measured: the commit, the files that differ from it, and a digest of the
sources the drivers import. Taken at the start and the end of a run, so a tree that changed meanwhile
(an editable install follows the working tree) shows in the report."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("slurmbatch", "slurmbatch_covalent")


def _git(*argv: str) -> str:
    try:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout if done.returncode == 0 else ""


def state() -> dict[str, Any]:
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    changed = _git("status", "--porcelain", "--", *PACKAGES).splitlines()
    return {
        "commit": _git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted_files": [line[3:] for line in changed],
        "digest": digest.hexdigest()[:12],
    }


def describe(start: dict[str, Any], end: dict[str, Any]) -> str:
    text = f"slurmbatch source: commit {start['commit']}"
    if start["uncommitted_files"]:
        text += f" with {len(start['uncommitted_files'])} uncommitted files"
    text += f" (digest {start['digest']})"
    if end["digest"] != start["digest"]:
        text += f"; it changed during the run (digest {end['digest']} at the end): its rows mix both"
    return text
