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
from slurmbatch.remote.runner import _parse_simple, _parse_with_argparse, parse_command_line

SOURCE = runner_source().decode()


def test_runner_is_python_3_8_and_needs_only_the_standard_library_and_cloudpickle() -> None:
    tree = ast.parse(SOURCE, feature_version=(3, 8))
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
    assert imported - set(sys.stdlib_module_names) == {"cloudpickle"}
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
    modules = {path.stem for path in Path(bundle.__file__).parent.glob("*.py")} - {"__init__", "bundle"}

    assert sorted(bundle.RUNNER_MODULES) == sorted(modules)  # none left out, none twice
    sections = [line.removeprefix("# ---- ") for line in SOURCE.splitlines() if line.startswith("# ---- ")]
    assert sections == [f"{name}.py" for name in bundle.RUNNER_MODULES]
    assert bundle.RUNNER_MODULES[-1] == "runner"  # its __main__ block runs what the others define
    assert hashlib.sha256(runner_source()).hexdigest() == runner_digest()


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
    for module in bundle.RUNNER_MODULES:
        for name, statement in _top_level_bindings(package.joinpath(f"{module}.py").read_text()).items():
            statements[name].add(statement)
    assert {name: found for name, found in statements.items() if len(found) > 1} == {}


SESSION_COMMAND_LINES = [
    ["run", "/w/fn/a.pkl", "/w/jobs/t.args.pkl", "/w/results/t.pkl", "--expect-python", "3.11"],
    ["run", "fn", "args", "res.{task}", "--expect-python", "3.11", "--expect-cloudpickle", "3", "--packed"],
    ["run", "fn", "args", "res", "--rank-dir", "/w/jobs/t.ranks", "--expect-cloudpickle=3"],
    ["run", "--packed", "fn", "args", "res"],
    ["gather", "/w/results/t.pkl", "--rank-dir", "/w/jobs/t.ranks"],
    ["gather", "res", "--rank-dir", "d", "--ntasks", "4"],
]


@pytest.mark.parametrize("argv", SESSION_COMMAND_LINES)
def test_the_session_command_lines_read_without_argparse_as_argparse_reads_them(argv: list[str]) -> None:
    simple = _parse_simple(argv)

    assert simple is not None
    assert vars(simple) == vars(_parse_with_argparse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "fn", "args", "res", "--expect-p", "3.11"],  # an abbreviation argparse accepts
        ["gather", "res", "--rank-dir", "d", "--ntasks", "-1"],  # a negative number, refused later
        ["run", "fn", "args", "res", "--pack"],  # and of a flag
    ],
)
def test_other_valid_command_lines_are_read_by_argparse(argv: list[str]) -> None:
    assert _parse_simple(argv) is None
    assert vars(parse_command_line(argv)) == vars(_parse_with_argparse(argv))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["run", "fn", "args"], "the following arguments are required: result_path"),
        (["gather", "res"], "the following arguments are required: --rank-dir"),
        (["gather", "res", "--rank-dir", "d", "--ntasks", "many"], "invalid int value: 'many'"),
        (["run", "fn", "args", "res", "--rank-dir"], "expected one argument"),
        (["submit", "fn"], "invalid choice: 'submit'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_a_wrong_command_line_is_explained_by_argparse(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_command_line(argv)

    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
