"""The runner as uploaded: one self-contained file built from its modules, and its command line."""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from slurmbatch.payload import runner_digest, runner_source
from slurmbatch.remote import bundle

UPLOADED = runner_source().decode()
BODY = bundle.runner_body()


@pytest.mark.parametrize("text", [UPLOADED, BODY], ids=["uploaded file", "runner code"])
def test_runner_is_python_3_8_and_needs_only_the_standard_library_and_cloudpickle(text: str) -> None:
    tree = ast.parse(text, feature_version=(3, 8))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    assert imported - set(sys.stdlib_module_names) <= {"cloudpickle"}
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    # Only those that never run: annotations' imports under TYPE_CHECKING (False in the bundle).
    guarded = [
        node.module
        for block in tree.body
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert sorted(relative) == sorted(guarded)


def test_the_bundle_holds_every_module_of_the_runner_in_order() -> None:
    modules = {path.stem for path in Path(bundle.__file__).parent.glob("*.py")}

    assert sorted(bundle.RUNNER_MODULES) == sorted(modules - {"__init__", "bundle", "compiled"})
    sections = [line.removeprefix("# ---- ") for line in BODY.splitlines() if line.startswith("# ---- ")]
    assert sections == [f"{name}.py" for name in bundle.RUNNER_MODULES]
    assert bundle.RUNNER_MODULES[-1] == "runner"  # its __main__ block runs what the others define
    assert hashlib.sha256(runner_source()).hexdigest() == runner_digest()


def test_the_uploaded_file_runs_the_runner_code_through_the_compile_cache() -> None:
    statements = ast.parse(UPLOADED).body
    source = next(
        node.value.value
        for node in statements
        if isinstance(node, ast.Assign)
        and [ast.unparse(target) for target in node.targets] == ["_RUNNER_SOURCE"]
        and isinstance(node.value, ast.Constant)
    )
    assert source == "\n" + BODY
    first_line = UPLOADED.splitlines().index("_RUNNER_SOURCE = r'''") + 1
    assert ast.unparse(statements[-1]) == f"exec(cached_code(_RUNNER_SOURCE, {first_line}, __file__))"


def _top_level_bindings(source: str) -> dict[str, str]:
    """Each name a module binds at its top level, with the statement that binds it."""
    bound: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"):
                continue  # dropped from the bundle
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = ast.unparse(node)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound[node.name] = f"def {node.name}"
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bound[name.id] = ast.unparse(node)
        elif isinstance(node, ast.Try):  # try: import _pickle as pickle / except ImportError: import pickle
            bound.update({name: ast.unparse(node) for name in _top_level_bindings(ast.unparse(node.body[0]))})
    return bound


def test_no_two_runner_modules_bind_a_name_differently() -> None:
    # In the bundle all modules share one namespace: a name bound twice must be bound the same way.
    package = importlib.resources.files("slurmbatch.remote")
    statements: dict[str, set[str]] = defaultdict(set)
    for module in ("compiled", *bundle.RUNNER_MODULES):  # the loader runs in the runner's namespace too
        for name, statement in _top_level_bindings(package.joinpath(f"{module}.py").read_text()).items():
            statements[name].add(statement)
    assert {name: found for name, found in statements.items() if len(found) > 1} == {}
