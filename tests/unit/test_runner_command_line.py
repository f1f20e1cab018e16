"""The runner's command line: the session's own forms read without argparse, anything else by argparse."""

from __future__ import annotations

import pytest

from slurmbatch.remote.runner import _parse_simple, _parse_with_argparse, parse_command_line

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
