"""TOTP codes (RFC 6238's own test vectors), the TOTP kbdint handler, and how answers are checked."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from slurmbatch import totp, totp_answers
from slurmbatch.transport.kbdint import KbdintClient, KbdintFailed, KbdintPrompt, checked_answers
from slurmbatch.transport.select import checked_transport

# RFC 6238 appendix B, SHA-1: the ASCII secret "12345678901234567890", 8 digits.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(
    ("at", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_rfc_6238_vectors(at: int, code: str) -> None:
    assert totp(RFC_SECRET, at=at, digits=8) == code


def test_totp_is_six_digits_per_30_s_window_and_accepts_lowercase_spaced_secrets() -> None:
    assert totp(RFC_SECRET, at=59) == "287082"
    assert totp(RFC_SECRET, at=30) == totp(RFC_SECRET, at=59)
    assert totp(RFC_SECRET, at=60) != totp(RFC_SECRET, at=59)
    assert totp("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", at=59) == "287082"


@pytest.mark.parametrize("secret", ["", "not base32!", "0189"])
def test_a_secret_that_is_not_base32_is_refused_at_once(secret: str) -> None:
    with pytest.raises(ValueError, match="base32"):
        totp_answers(secret)


def test_totp_answers_gives_the_code_and_the_password_where_asked() -> None:
    handler = totp_answers(RFC_SECRET, password="hunter2")
    answers = handler("", "", [("Password: ", False), ("Verification code: ", False)])
    assert isinstance(answers, list)
    assert answers[0] == "hunter2"
    now = time.time()
    assert answers[1] in {totp(RFC_SECRET, at=now - 30), totp(RFC_SECRET, at=now)}  # this window


def test_answers_must_be_one_string_per_prompt() -> None:
    prompts = [("Verification code: ", False)]
    assert checked_answers(["123456"], prompts) == ["123456"]
    assert checked_answers("123456", prompts) == ["123456"]
    with pytest.raises(KbdintFailed, match="returned 2 answer"):
        checked_answers(["1", "2"], prompts)
    with pytest.raises(KbdintFailed, match="list of strings"):
        checked_answers([123456], prompts)
    with pytest.raises(KbdintFailed, match="list of strings"):
        checked_answers(None, prompts)


def test_transport_names_are_checked() -> None:
    assert checked_transport("openssh", "/tmp/cm") == "openssh"
    with pytest.raises(ValueError, match="'auto', 'asyncssh', 'openssh'"):
        checked_transport("paramiko", None)
    with pytest.raises(ValueError, match="not by 'asyncssh'"):
        checked_transport("asyncssh", "/tmp/cm")
    with pytest.raises(ValueError, match="control_path"):
        checked_transport("openssh", "  ")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_kbdint_client_keeps_the_handlers_failure_and_skips_empty_rounds(
    anyio_backend: str,
) -> None:
    async def wrong_count(name: str, instructions: str, prompts: Sequence[KbdintPrompt]) -> Sequence[str]:
        return ["1", "2"]

    async def raising(name: str, instructions: str, prompts: Sequence[KbdintPrompt]) -> Sequence[str]:
        raise LookupError("no token plugged in")

    prompts = [("Verification code: ", False)]
    client = KbdintClient(wrong_count)
    assert await client.kbdint_challenge_received("", "", "", []) == []  # a message round: not asked
    assert client.challenges == 0
    assert await client.kbdint_challenge_received("", "", "", prompts) is None
    assert client.failure is not None and "2 answer(s) for 1 prompt(s)" in str(client.failure)
    client = KbdintClient(raising)
    assert await client.kbdint_challenge_received("", "", "", prompts) is None
    assert client.failure is not None and isinstance(client.failure.cause, LookupError)
    assert "raised LookupError: no token plugged in" in str(client.failure)
