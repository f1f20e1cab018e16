"""Ready-made answers to keyboard-interactive logins: a terminal prompt, and TOTP codes from a secret.

Pass either as `SlurmSession(..., kbdint=...)` (or `SlurmExecutor`). Both are plain functions, so the
session calls them in a worker thread: neither blocks the event loop.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import struct
import sys
import threading
import time
from collections.abc import Sequence

from .transport.kbdint import KbdintHandler, KbdintPrompt

__all__ = ["terminal_prompt", "totp", "totp_answers"]

_TERMINAL = threading.Lock()  # two sessions of one program never prompt over each other


def terminal_prompt(name: str, instructions: str, prompts: Sequence[KbdintPrompt]) -> list[str]:
    """Ask the person at the terminal: the site's headings on standard error, then each prompt.

    Secret prompts (a password, a one-time code) are read with `getpass.getpass`, so what is
    typed is not shown; others with `input`. Every reconnect asks again, so prefer an OpenSSH
    ControlMaster or `totp_answers` for long sessions. The answers are returned and not kept.
    """
    with _TERMINAL:
        for heading in (name, instructions):
            if heading.strip():
                print(heading.strip(), file=sys.stderr, flush=True)
        return [input(text) if echo else getpass.getpass(text) for text, echo in prompts]


def totp(secret: str, *, at: float | None = None, digits: int = 6, period: int = 30) -> str:
    """The RFC 6238 time-based one-time code of `secret` (base32, as authenticator apps show it).

    HMAC-SHA1 over the number of `period`-second steps since the Unix epoch, truncated to `digits`
    decimal digits: what Google Authenticator, FreeOTP and `oathtool --totp -b` compute. `at` is the
    Unix time to compute the code for (default: now).

    Raises:
        ValueError: `secret` is not base32 text.
    """
    key = _decode_secret(secret)
    step = int((time.time() if at is None else at) // period)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def totp_answers(
    secret: str, *, password: str | None = None, digits: int = 6, period: int = 30
) -> KbdintHandler:
    """A kbdint handler that answers one-time-code prompts with the current TOTP code of `secret`.

    Prompts that ask for a password (their text contains "password") get `password`, when given;
    every other prompt gets the code. Use it only where the site accepts a secret stored on this
    machine (it makes the second factor as strong as the file that holds the secret). The secret is
    checked now, so a typo fails here and not at the first login.

    Raises:
        ValueError: `secret` is not base32 text.
    """
    _decode_secret(secret)

    def answer(name: str, instructions: str, prompts: Sequence[KbdintPrompt]) -> list[str]:
        code = totp(secret, digits=digits, period=period)
        return [
            password if password is not None and "password" in text.lower() else code for text, _ in prompts
        ]

    return answer


def _decode_secret(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError(
            "a TOTP secret must be the non-empty base32 text the site gave (e.g. 'JBSWY3DPEHPK3PXP')"
        )
    text = "".join(secret.split()).upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise ValueError(
            "the TOTP secret is not base32 text (letters A-Z and digits 2-7, as the site's QR code or "
            "setup page shows it); check that it was copied whole"
        ) from None
