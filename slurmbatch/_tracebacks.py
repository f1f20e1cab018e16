"""Remote tracebacks made readable again. Pure apart from reading local source files.

cloudpickle names the code of functions it pickles by value ``<dynamic-code>``, so a remote traceback
shows no file and no source line for them. Line numbers survive, though: where the submitting file still
defines the frame's function at that place, the frame gets that file name and its source line back.
"""

from __future__ import annotations

import linecache
import re

_DYNAMIC_FRAME = re.compile(r'^(\s*)File "<dynamic-code>", line (\d+), in (\S+)$')


def restore_source_lines(traceback_text: str, source_file: str | None) -> str:
    """Rewrite ``<dynamic-code>`` frames of ``traceback_text`` that ``source_file`` defines."""
    if not source_file or "<dynamic-code>" not in traceback_text:
        return traceback_text
    out: list[str] = []
    for line in traceback_text.splitlines():
        match = _DYNAMIC_FRAME.match(line)
        if match is None or not _defines(source_file, int(match[2]), match[3]):
            out.append(line)
            continue
        indent, number, name = match[1], int(match[2]), match[3]
        out.append(f'{indent}File "{source_file}", line {number}, in {name}')
        source = linecache.getline(source_file, number).strip()
        if source:
            out.append(f"{indent}  {source}")
    return "\n".join(out) + ("\n" if traceback_text.endswith("\n") else "")


def _defines(source_file: str, number: int, name: str) -> bool:
    """True if ``def name`` (or ``lambda`` for ``<lambda>``) opens a block at or above ``number``."""
    wanted = "lambda" if name == "<lambda>" else f"def {name}("
    for candidate in range(number, max(0, number - 400), -1):
        if wanted in linecache.getline(source_file, candidate):
            return True
    return False
