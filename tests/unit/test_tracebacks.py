"""Remote tracebacks get their source lines back where the local file still defines the function."""

from pathlib import Path

from slurmbatch._tracebacks import restore_source_lines

SOURCE = """def helper(x):
    return 1 / x


def outer():
    return helper(0)
"""

REMOTE = """Traceback (most recent call last):
  File "<dynamic-code>", line 6, in outer
  File "<dynamic-code>", line 2, in helper
  File "/usr/lib/python3.11/fractions.py", line 10, in other
ZeroDivisionError: division by zero
"""


def test_dynamic_frames_get_file_and_source_line(tmp_path: Path) -> None:
    source = tmp_path / "work.py"
    source.write_text(SOURCE)
    restored = restore_source_lines(REMOTE, str(source))
    assert restored.splitlines() == [
        "Traceback (most recent call last):",
        f'  File "{source}", line 6, in outer',
        "    return helper(0)",
        f'  File "{source}", line 2, in helper',
        "    return 1 / x",
        '  File "/usr/lib/python3.11/fractions.py", line 10, in other',
        "ZeroDivisionError: division by zero",
    ]


def test_frames_the_file_does_not_define_stay_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "other.py"
    source.write_text("x = 1\n" * 10)
    assert restore_source_lines(REMOTE, str(source)) == REMOTE
    assert restore_source_lines(REMOTE, None) == REMOTE
