"""Framed remote scripts, run by the real local /bin/sh and bash as a login node would run them."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurmbatch._errors import IncompleteReply, RemoteEnvironmentError
from slurmbatch.transport.framing import ScriptFrame


def run_framed(
    frame: ScriptFrame, body: str, data: str | None = None, *, login: str = "", noise: str = ""
) -> tuple[str, str]:
    """What a login node would send back: ``noise`` stands for start-up files printing first."""
    command = f"{noise}{login}{frame.command}"
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        input=frame.script(body, data),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout, done.stderr


def test_the_body_output_and_exit_status_come_back_alone() -> None:
    frame = ScriptFrame()
    stdout, stderr = run_framed(frame, "echo one\necho two >&2\nexit 3", noise="echo motd; echo notice >&2; ")
    reply = frame.parse(stdout, stderr, what="test")
    assert (reply.exit_status, reply.stdout, reply.stderr) == (3, "one\n", "two\n")


def test_start_up_output_without_a_newline_is_dropped_too() -> None:
    frame = ScriptFrame()
    stdout, stderr = run_framed(frame, "printf last", noise="printf 'no newline'; ")
    reply = frame.parse(stdout, stderr, what="test")
    assert (reply.exit_status, reply.stdout) == (0, "last")


@pytest.mark.parametrize(
    ("body", "expected"),
    [("printf ''", ""), ("echo", "\n"), ("printf 'a\\n\\n'", "a\n\n"), ("", "")],
)
def test_trailing_newlines_are_the_body_s_own(body: str, expected: str) -> None:
    frame = ScriptFrame()
    assert frame.parse(*run_framed(frame, body), what="test").stdout == expected


def test_data_is_the_body_s_standard_input_and_nothing_else_is() -> None:
    frame = ScriptFrame()
    reply = frame.parse(*run_framed(frame, "cat", "a\nb\n'quoted' $HOME `x`\n"), what="test")
    assert reply.stdout == "a\nb\n'quoted' $HOME `x`\n"
    reply = frame.parse(*run_framed(frame, "cat; echo after"), what="test")
    assert reply.stdout == "after\n"  # the rest of the script is not readable as input


def test_a_body_needing_bash_runs_under_bash() -> None:
    frame = ScriptFrame(shell="bash")
    reply = frame.parse(*run_framed(frame, "x=abc; echo ${x//b/B}; [[ -n $x ]] && echo yes"), what="t")
    assert reply.stdout == "aBc\nyes\n"


def test_a_reply_cut_short_is_incomplete_never_empty() -> None:
    frame = ScriptFrame()
    stdout, stderr = run_framed(frame, "echo partial; kill -9 $$")
    assert "partial" in stdout
    with pytest.raises(IncompleteReply, match="stopped before its end"):
        frame.parse(stdout, stderr, what="the status query")


def test_a_script_that_never_started_says_so() -> None:
    frame = ScriptFrame(shell="/nonexistent/sh")
    stdout, stderr = run_framed(frame, "echo hi")
    with pytest.raises(RemoteEnvironmentError, match=r"did not start.*/nonexistent/sh"):
        frame.parse(stdout, stderr, what="the probe")


def test_markers_of_another_script_do_not_count() -> None:
    frame, other = ScriptFrame(), ScriptFrame()
    body = f"echo '{other.begin}'; printf '\\n%s 0\\n' '{other.end}'; echo real"
    reply = frame.parse(*run_framed(frame, body), what="test")
    assert reply.stdout.endswith("real\n") and reply.exit_status == 0


def test_nul_bytes_in_data_are_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        ScriptFrame().script("cat", "a\0b")


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0\r", codec="utf-8"), max_size=200))
def test_any_text_travels_as_data_unchanged(text: str) -> None:
    frame = ScriptFrame()
    reply = frame.parse(*run_framed(frame, "cat", text), what="test")
    assert reply.stdout == (text + "\n" if text and not text.endswith("\n") else text)
