"""Remote scripts that the login shell never parses, with replies framed by markers. Pure.

A login node hands every SSH command to the user's login shell, with its start-up files: tcsh does not
parse ``{ ...; }`` or ``$(...)``, and a ``~/.bashrc`` or ``~/.cshrc`` may print a notice on every
command. So the command sent is only ``exec /bin/sh -s`` (words every shell parses the same way), and
the script itself travels on standard input, for that shell alone to read.

The script prints a begin marker on standard output and on standard error, runs the body in a subshell
(an ``exit`` in the body ends only the body), then prints an end marker carrying the body's exit status.
What start-up files print before the begin marker is dropped, and a reply without its end marker is
incomplete (:class:`IncompleteReply`): the shell died or the channel closed early. It is never read as a
body that printed nothing. A reply without the begin marker means the script never started
(:class:`RemoteEnvironmentError`).

The body's standard input is ``data``, as a here-document inside the script (text without NUL bytes),
or ``/dev/null``: nothing in the body can read the rest of the script by accident.
"""

from __future__ import annotations

import secrets

import attrs

from slurmbatch._errors import IncompleteReply, RemoteEnvironmentError

__all__ = ["FramedReply", "ScriptFrame"]

_PREFIX = "@@sb-"


@attrs.frozen
class FramedReply:
    """What the body of a framed script printed, and its exit status."""

    exit_status: int
    stdout: str
    stderr: str
    #: What came before the begin marker on standard output: the login shell's start-up files' output.
    preamble: str = ""


@attrs.frozen
class ScriptFrame:
    """One script's markers: a random nonce, so no output of the body can fake them.

    Args:
        shell: The shell that reads the script: ``/bin/sh`` (POSIX) or ``bash`` for bodies that need it.
        nonce: Distinguishes this script's markers; random by default.
    """

    shell: str = "/bin/sh"
    nonce: str = attrs.field(factory=lambda: secrets.token_hex(8))

    @property
    def begin(self) -> str:
        """The line printed before the body runs, on standard output and on standard error."""
        return f"{_PREFIX}begin-{self.nonce}"

    @property
    def end(self) -> str:
        """The start of the line printed after the body has run, followed by its exit status."""
        return f"{_PREFIX}end-{self.nonce}"

    @property
    def command(self) -> str:
        """The command line for the login shell: plain words, parsed alike by sh, csh, tcsh, fish and zsh."""
        return f"exec {self.shell} -s"

    def script(self, body: str, data: str | None = None) -> str:
        """The text to send on standard input: ``body`` framed, with ``data`` as its standard input."""
        if data is not None and "\0" in data:
            raise ValueError("data of a remote script is text: it may not hold NUL bytes")
        delimiter = f"{_PREFIX}data-{self.nonce}"
        if data is None:
            redirect, document = "</dev/null", ""
        else:
            redirect = f"<<'{delimiter}'"
            document = data + ("" if data.endswith("\n") or not data else "\n") + delimiter + "\n"
        return (
            f"printf '%s\\n' '{self.begin}'; printf '%s\\n' '{self.begin}' >&2\n"
            f"(\n{body.rstrip() or ':'}\n) {redirect}\n{document}"
            f"sb_status=$?; printf '\\n%s %s\\n' '{self.end}' \"$sb_status\"; printf '\\n%s\\n' '{self.end}' >&2\n"
        )

    def parse(self, stdout: str, stderr: str, *, what: str) -> FramedReply:
        """The body's own output and exit status.

        Raises :class:`RemoteEnvironmentError` when the begin marker is missing (the script never ran),
        :class:`IncompleteReply` when the end marker is.

        ``what`` names the script in the error, e.g. ``"the status query"``.
        """
        begin = self.begin + "\n"
        start = stdout.find(begin)
        if start < 0:
            raise RemoteEnvironmentError(
                f"{what} did not start on the login node: `{self.command}` printed nothing of its script"
                f"{_said(stdout, stderr)}. Check that {self.shell} exists there and that your login shell's "
                "start-up files do not exit or read standard input."
            )
        body_out = stdout[start + len(begin) :]
        end = body_out.rfind("\n" + self.end + " ")
        if end < 0:
            raise IncompleteReply(
                f"{what} stopped before its end on the login node (the shell running it was killed, or the "
                f"channel closed early){_said(body_out, stderr)}; nothing of its reply is taken as complete.",
                stdout=stdout,
                stderr=stderr,
            )
        status_text = body_out[end + len(self.end) + 2 :].split("\n", 1)[0].strip()
        status = int(status_text) if status_text.lstrip("-").isdigit() else -1
        return FramedReply(
            exit_status=status,
            stdout=body_out[:end],
            stderr=_framed_stderr(self, stderr),
            preamble=stdout[:start],
        )

    def begins(self, line: str) -> bool:
        """Whether ``line`` (without its newline) is the begin marker."""
        return line == self.begin

    def ending(self, line: str) -> int | None:
        """The body's exit status if ``line`` is the end marker line, else None."""
        if not line.startswith(self.end + " "):
            return None
        status = line[len(self.end) + 1 :].strip()
        return int(status) if status.lstrip("-").isdigit() else -1


def _framed_stderr(frame: ScriptFrame, stderr: str) -> str:
    begin = frame.begin + "\n"
    start = stderr.find(begin)
    text = stderr[start + len(begin) :] if start >= 0 else stderr
    end = text.rfind("\n" + frame.end + "\n")
    return text[:end] if end >= 0 else text


def _said(stdout: str, stderr: str) -> str:
    text = (stderr.strip() or stdout.strip())[-500:]
    return f" (it said: {text})" if text else ""
