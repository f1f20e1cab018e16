"""How one option becomes text on an ``#SBATCH`` line or an ``srun`` command line.

The rule is the same for both: a one-letter key gives ``-k value``, a longer key ``--key=value``; ``True``
gives the bare flag, ``False`` and ``None`` nothing, a list its items joined with commas. Only the quoting
differs, because two different parsers read the result: ``srun`` lines are read by bash, while
``#SBATCH`` lines are comments to bash and are split into words by sbatch itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping

from slurmbatch.spec import OptionValue

__all__ = ["format_value", "render_option", "render_options", "sbatch_quote", "shell_quote"]

Quote = Callable[[str], str]
"""A function that quotes one word for the parser that will read it."""

# The characters shlex.quote leaves bare; both bash and sbatch read these literally.
_SAFE_WORD = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
# Characters sbatch treats specially inside a double-quoted #SBATCH word. A backslash escapes the next
# character even inside quotes, and older sbatch releases end the line at '#' even inside quotes.
_SBATCH_SPECIAL = re.compile(r'([\\"#])')


def shell_quote(word: str) -> str:
    """Quote *word* for bash (``shlex.quote``): it stays one word and nothing in it expands."""
    return shlex.quote(word)


def sbatch_quote(word: str) -> str:
    """Quote *word* for an ``#SBATCH`` line, so that sbatch reads it back as exactly one word.

    sbatch does not follow shell rules here: a backslash escapes the next character even inside single
    quotes. Words that need quoting are therefore wrapped in double quotes, with ``\\``, ``"`` and ``#``
    escaped by a backslash. The word must not contain a newline (an ``#SBATCH`` line ends there).
    """
    if "\n" in word or "\0" in word:
        raise ValueError(f"{word!r} cannot go on an #SBATCH line: it contains a newline or NUL character.")
    if _SAFE_WORD.fullmatch(word):
        return word
    return '"' + _SBATCH_SPECIAL.sub(r"\\\1", word) + '"'


def format_value(value: OptionValue) -> str | None:
    """The text of an option's value, unquoted; ``None`` when the option is left out or is a bare flag.

    Lists and tuples are joined with commas; numbers are written as Python writes them.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def render_option(key: str, value: OptionValue, *, quote: Quote = shell_quote) -> str | None:
    """Render one option, e.g. ``--time=00:10:00``, ``-n 4`` or ``--exclusive``; ``None`` if left out.

    *quote* quotes the value: :func:`shell_quote` for command lines, :func:`sbatch_quote` for ``#SBATCH``.
    """
    if value is None or value is False:
        return None
    flag = f"-{key}" if len(key) == 1 else f"--{key}"
    text = format_value(value)
    if text is None:
        return flag
    return f"{flag} {quote(text)}" if len(key) == 1 else f"{flag}={quote(text)}"


def render_options(options: Mapping[str, OptionValue], *, quote: Quote = shell_quote) -> list[str]:
    """Render every option in *options*, in order, leaving out those that are ``False`` or ``None``."""
    rendered = (render_option(key, value, quote=quote) for key, value in options.items())
    return [text for text in rendered if text is not None]
