"""The job-side program as the session uploads it: one file built from the runner's modules.

The runner is written as a package of small modules (one concern each, imported by the client too),
and uploaded as one self-contained script. :func:`runner_body` is the runner's code: each module's text
in dependency order, without the imports of its sibling modules (their names are defined above it in
the same file). :func:`runner_bundle`, the uploaded file, holds that text as a string, after the loader
of :mod:`slurmbatch.remote.compiled`, which compiles it once and lets later tasks read the code back.
So the modules stay the one source of truth, and a task reads one file and imports no module of ours.
The modules never define the same top-level name twice (the unit tests check), and keep to what one
shared namespace allows: ``from .module import name`` for siblings, nothing of the package by other
means.
"""

from __future__ import annotations

import ast
import importlib.resources

__all__ = ["RUNNER_MODULES", "runner_body", "runner_bundle"]

#: The modules of the uploaded runner, each after those it uses; ``runner`` runs the command line.
RUNNER_MODULES = (
    "failures",
    "table",
    "environment",
    "files",
    "outcome",
    "upstream",
    "loading",
    "ranks",
    "checkpoint",
    "runner",
)

_HEADER = (
    "# The slurmbatch job-side runner, built from the modules of slurmbatch.remote:\n"
    "# {modules}.\n"
    "# Edit those, not this file. `python3 this-file.py --help` describes the command line.\n"
    "from __future__ import annotations\n"
)
_LOADER_HEADER = (
    "# The slurmbatch job-side runner. Its code is the text of _RUNNER_SOURCE below, built from the\n"
    "# modules of slurmbatch.remote: edit those, not this file. Running this file runs it, compiled once\n"
    "# (compiled.py, next) and read back by later tasks. `python3 this-file.py --help` describes it.\n"
    "from __future__ import annotations\n"
)


def runner_body() -> str:
    """The runner's code: the modules in :data:`RUNNER_MODULES`, joined into one script."""
    package = importlib.resources.files(__package__)
    parts = [_HEADER.format(modules=", ".join(f"{name}.py" for name in RUNNER_MODULES))]
    for name in RUNNER_MODULES:
        source = package.joinpath(f"{name}.py").read_text()
        parts.append(f"\n\n# ---- {name}.py\n\n{_without_package_imports(source)}")
    return "".join(parts)


def runner_bundle() -> str:
    """The text of the uploaded runner: :func:`runner_body` as a string, and the loader that runs it."""
    body = runner_body()
    # The body goes into a raw triple-quoted string, which it must not end.
    if "'''" in body or body.endswith("\\"):
        raise ValueError("The runner's modules must not contain ''' nor end with a backslash.")
    loader = _without_package_imports(
        importlib.resources.files(__package__).joinpath("compiled.py").read_text()
    )
    head = f"{_LOADER_HEADER}\n\n# ---- compiled.py\n\n{loader}\n\n_RUNNER_SOURCE = r'''\n"
    # The string starts on the line of its opening quotes: compiled code counts lines from there.
    first_line = head.count("\n")
    return f"{head}{body}'''\n\nexec(cached_code(_RUNNER_SOURCE, {first_line}, __file__))\n"


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
