"""The job-side program as the session uploads it: one file built from the runner's modules.

The runner is written as a package of small modules (one concern each, imported by the client too),
and uploaded as one self-contained script: each module's text in dependency order, without the
imports of its sibling modules (their names are defined above it in the same file). So the modules stay
the one source of truth, and a task on the cluster reads one file and imports no module of its own.
The modules never define the same top-level name twice (the unit tests check), and keep to what one
shared namespace allows: ``from .module import name`` for siblings, nothing of the package by other
means.
"""

from __future__ import annotations

import ast
import importlib.resources

__all__ = ["RUNNER_MODULES", "runner_bundle"]

#: The modules of the uploaded runner, each after those it uses; ``runner`` runs the command line.
RUNNER_MODULES = ("failures", "table", "environment", "files", "outcome", "loading", "ranks", "runner")

_HEADER = (
    "# The slurmbatch job-side runner, built from the modules of slurmbatch.remote:\n"
    "# {modules}.\n"
    "# Edit those, not this file. `python3 this-file.py --help` describes the command line.\n"
    "from __future__ import annotations\n"
)


def runner_bundle() -> str:
    """The text of the uploaded runner: the modules in :data:`RUNNER_MODULES`, joined into one script."""
    package = importlib.resources.files(__package__)
    parts = [_HEADER.format(modules=", ".join(f"{name}.py" for name in RUNNER_MODULES))]
    for name in RUNNER_MODULES:
        source = package.joinpath(f"{name}.py").read_text()
        parts.append(f"\n\n# ---- {name}.py\n\n{_without_package_imports(source)}")
    return "".join(parts)


def _without_package_imports(source: str) -> str:
    """``source`` without its ``from __future__`` import and its imports of sibling modules."""
    drop: set[int] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or node.module == "__future__"):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    kept: list[str] = []
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        if number in drop:
            continue
        if not line.strip() and number - 1 in drop and (not kept or not kept[-1].strip()):
            drop.add(number)  # the gap the dropped lines leave: one blank line is enough
            continue
        kept.append(line)
    return "".join(kept).strip() + "\n"
