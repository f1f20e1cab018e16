"""Keyboard-interactive login: the handler type, and the asyncssh client that asks it.

Sites with multi-factor login ask for a one-time code (or a password, or both) through SSH's
keyboard-interactive method. A `KbdintHandler` answers those prompts. It is called for every connection
the pool opens, reconnects included, and never twice at once for one pool: the pool opens one connection
at a time, so a second connection waits for the first's login.

A handler may be a plain function or a coroutine function. A plain function runs in a worker thread, so
one that blocks (reads a terminal, asks a hardware token) does not stall the event loop. A coroutine
function runs on the caller's event loop (asyncio or trio). Answers are handed to asyncssh and dropped:
they are never logged or kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncssh

__all__ = ["KbdintClient", "KbdintFailed", "KbdintHandler", "KbdintPrompt", "checked_answers"]

#: One prompt of a keyboard-interactive challenge: its text (e.g. ``"Verification code: "``) and whether
#: the answer may be shown as it is typed (``False`` for secrets).
KbdintPrompt = tuple[str, bool]

#: ``handler(name, instructions, prompts) -> answers``: one answer per prompt, in order. ``name`` and
#: ``instructions`` are the server's headings for the challenge (often empty).
KbdintHandler = Callable[[str, str, Sequence[KbdintPrompt]], Sequence[str] | Awaitable[Sequence[str]]]

#: Runs the handler where it belongs (see `AsyncioBridge.call_back`) and returns its answers.
Answerer = Callable[[str, str, Sequence[KbdintPrompt]], Awaitable[Sequence[str]]]


class KbdintFailed(Exception):
    """The handler raised or answered in a form that cannot be sent; the login was abandoned."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def checked_answers(answers: object, prompts: Sequence[KbdintPrompt]) -> list[str]:
    """``answers`` as a list of strings, one per prompt, or `KbdintFailed` saying what is wrong."""
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
        raise KbdintFailed(
            f"the kbdint handler must return a list of strings (one answer per prompt), got "
            f"{type(answers).__name__}"
        )
    if len(answers) != len(prompts):
        raise KbdintFailed(
            f"the kbdint handler returned {len(answers)} answer(s) for {len(prompts)} prompt(s) "
            f"({', '.join(repr(text) for text, _ in prompts)}); return one answer per prompt"
        )
    return list(answers)


class KbdintClient(asyncssh.SSHClient):
    """An asyncssh client that answers keyboard-interactive challenges through an `Answerer`.

    The first failure of the handler is kept in `failure` so that the connect error can name it.
    """

    def __init__(self, answer: Answerer) -> None:
        self._answer = answer
        self.failure: KbdintFailed | None = None
        self.challenges = 0

    def kbdint_auth_requested(self) -> str:
        return ""  # no submethods: let the server choose what to ask

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[KbdintPrompt]
    ) -> list[str] | None:
        if not prompts:
            return []  # an informational round (PAM messages): nothing to answer
        self.challenges += 1
        try:
            return checked_answers(await self._answer(name, instructions, list(prompts)), prompts)
        except KbdintFailed as failure:
            self.failure = failure
        except Exception as error:
            self.failure = KbdintFailed(f"the kbdint handler raised {type(error).__name__}: {error}", error)
        return None  # abandons keyboard-interactive: the login fails with the reason kept above
