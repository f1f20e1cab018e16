"""No JobSpec value can run a command of its own in the batch script the session renders.

Arbitrary text goes into every JobSpec field that holds data rather than commands (option names and
values, srun options, variables, the conda environment, the job name, the interpreter's arguments), and
into what the session adds itself (the remote work directory, the function's name). The script is rendered
exactly as the session renders it, checked with ``bash -n``, and run by bash in an empty directory whose
PATH starts with stub commands (python3, srun, conda, sbatch) that only record how they were called. Then:

* no canary file exists: neither ``touch canary``-style attacks nor the ``sbinjected`` stub ever ran;
* the stubs were called exactly in the expected order, each with exactly the expected words.

``setup``, ``prerun_commands``, ``postrun_commands`` and ``srun_append`` are shell commands by design, so
they hold marker commands here (``srun_append`` with arbitrary quoted arguments); the check is that nothing
else reaches the shell.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmbatch import JobSpec, SlurmSession
from slurmbatch._remote_layout import RemoteLayout, new_token
from slurmbatch._submitter import ArrayShape
from slurmbatch.payload import FunctionBlob, runner_digest

from .test_script import expected_words

CANARY = "canary"
# Each tries to run a command or create the canary file, from any quoting context it might land in.
ATTACKS = [
    "$(sbinjected)",
    "`sbinjected`",
    "${IFS}sbinjected",
    "$(touch canary)",
    "`touch canary`",
    "; sbinjected",
    "| sbinjected",
    "&& sbinjected",
    "|| sbinjected",
    "& sbinjected &",
    "'; sbinjected; '",
    '"; sbinjected; "',
    "'\"$(sbinjected)\"'",
    "\\'; sbinjected #",
    '\\"; sbinjected #',
    "> canary",
    ">> canary",
    "< /dev/null; touch canary",
    "<(sbinjected)",
    "$'\\x0a'sbinjected",
    "\r\nsbinjected",
    "\\\nsbinjected",
    "\nsbinjected\n",
    "#SBATCH --wrap=sbinjected",
    "\\",
    "'",
    '"',
    "#",
    "*",
    "~",
    "!!",
    "{a,b}",
    "%j",
]
STUB_NAMES = ("python3", "srun", "conda", "sbatch", "sbmark")

# Records the call as NUL-separated words in the next numbered file; python3 and srun also record the
# environment they were given. Nothing else: a stub never runs its arguments.
STUB = """#!/bin/bash
n=$(( $(cat "$SB_CALLS/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$SB_CALLS/count"
printf '%s\\0' "${0##*/}" "$@" > "$SB_CALLS/call.$n"
case "${0##*/}" in python3|srun) env -0 > "$SB_CALLS/env.$n" ;; esac
exit 0
"""
# The command every attack tries to reach: it leaves the canary behind.
INJECTED = """#!/bin/bash
echo injected > "$SB_WORKDIR/canary"
"""


@pytest.fixture(scope="module")
def stub_bin() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        for name in STUB_NAMES:
            Path(directory, name).write_text(STUB)
        Path(directory, "sbinjected").write_text(INJECTED)
        for path in Path(directory).iterdir():
            path.chmod(0o755)
        yield directory


def text(*, multiline: bool, min_size: int = 0) -> st.SearchStrategy[str]:
    """Arbitrary text mixed with injection attempts (newlines only where a field allows them)."""
    excluded = "\0" if multiline else "\n\0"
    attacks = [attack for attack in ATTACKS if multiline or "\n" not in attack]
    pieces = st.one_of(
        st.text(st.characters(exclude_characters=excluded, exclude_categories=["Cs"]), max_size=8),
        st.sampled_from(attacks),
    )
    return st.lists(pieces, min_size=min_size, max_size=5).map("".join)


line = text(multiline=False)
name_text = text(multiline=False, min_size=1).filter(str.strip)
option_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,10}", fullmatch=True)
option_values = st.one_of(
    line.filter(bool),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(line.filter(bool), st.integers()), min_size=1, max_size=3),
)
variable_values = st.one_of(text(multiline=True), st.integers(), st.floats(allow_nan=False), st.booleans())
QUICK = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def render_as_the_session_does(spec: JobSpec, *, python: str, workdir: str, name: str, array: int) -> str:
    session = SlurmSession("login.invalid", ssh_config=(), python=python)
    session._layout = RemoteLayout(workdir)
    blob = FunctionBlob(data=b"", digest="0" * 64, name=name)
    return session._render(spec, blob, new_token(), ArrayShape(array) if array > 1 else None)


def run_script(script: str, stub_bin: str) -> tuple[list[list[str]], list[dict[str, str]]]:
    """Run ``script`` with bash; return the stub calls in order, and the environment python3/srun saw."""
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir, "job.sh")
        path.write_text(script, encoding="utf-8", errors="surrogateescape")
        syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True)
        assert syntax.returncode == 0, syntax.stderr.decode()
        calls_dir = Path(workdir, "calls")
        calls_dir.mkdir()
        env = {
            "PATH": f"{stub_bin}:/usr/bin:/bin",
            "HOME": workdir,
            "SB_CALLS": str(calls_dir),
            "SB_WORKDIR": workdir,
        }
        done = subprocess.run(["bash", str(path)], cwd=workdir, env=env, capture_output=True, timeout=30)
        assert not Path(workdir, CANARY).exists(), f"a value ran a command:\n{script}"
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        count = int((calls_dir / "count").read_text()) if (calls_dir / "count").exists() else 0
        calls = [
            (calls_dir / f"call.{n}").read_bytes().decode().split("\0")[:-1] for n in range(1, count + 1)
        ]
        environments = [
            dict(entry.split("=", 1) for entry in env_file.read_bytes().decode().split("\0") if "=" in entry)
            for env_file in sorted(calls_dir.glob("env.*"))
        ]
    return calls, environments


@QUICK
@given(
    options=st.dictionaries(option_keys, option_values, max_size=4),
    srun_options=st.dictionaries(option_keys, option_values, max_size=4),
    use_srun=st.booleans(),
    append_words=st.lists(line, max_size=3),
    variables=st.dictionaries(
        st.from_regex(r"SBT_[A-Za-z0-9_]{0,6}", fullmatch=True), variable_values, max_size=4
    ),
    conda_env=st.none() | name_text,
    job_name=st.none() | name_text,
    spec_python=st.none() | line.map(lambda tail: f"python3 {tail}"),
    session_python=line.map(lambda tail: f"python3 {tail}"),
    workdir=line.map(lambda tail: f"/w/{tail}"),
    name=line,
    array=st.sampled_from([1, 3]),
    array_parallelism=st.none() | st.integers(min_value=1, max_value=5),
)
def test_no_spec_value_runs_a_command(
    stub_bin: str,
    options: dict[str, Any],
    srun_options: dict[str, Any],
    use_srun: bool,
    append_words: list[str],
    variables: dict[str, Any],
    conda_env: str | None,
    job_name: str | None,
    spec_python: str | None,
    session_python: str,
    workdir: str,
    name: str,
    array: int,
    array_parallelism: int | None,
) -> None:
    spec_python = accepted_python(spec_python, "JobSpec.python")
    session_python = accepted_python(session_python, "python is") or "python3"
    spec = JobSpec(
        options=options,
        use_srun=use_srun,
        srun_options=srun_options if use_srun else {},
        # A command by design; given as quoted words, it must reach srun as exactly those words.
        srun_append=shlex.join(["sbmark", *append_words]) if use_srun else "",
        setup=["sbmark setup"],
        prerun_commands=["sbmark prerun"],
        postrun_commands=["sbmark postrun"],
        variables=variables,
        conda_env=conda_env,
        job_name=job_name,
        python=spec_python,
        array_parallelism=array_parallelism,
    )
    script = render_as_the_session_does(spec, python=session_python, workdir=workdir, name=name, array=array)
    calls, environments = run_script(script, stub_bin)

    python = shlex.split(spec_python or session_python)
    expected: list[list[str]] = [["sbmark", "setup"]]
    if conda_env is not None:
        expected += [["conda", "shell.bash", "hook"], ["conda", "activate", conda_env]]
    expected.append(["sbmark", "prerun"])
    if use_srun:
        # srun's stub does not run its command: the append marker and the Python call are its words.
        expected.append(["srun", *expected_words(srun_options), "sbmark", *append_words, *python])
    else:
        expected.append(python)
    expected.append(["sbmark", "postrun"])
    if use_srun:
        expected.append(python)  # the gather step after the ranks
    assert [call[: len(want)] for call, want in zip(calls, expected, strict=True)] == expected

    # The runner's own arguments follow the interpreter's, each one word, paths inside the work directory.
    layout = RemoteLayout(workdir)
    run_call = calls[len(expected) - (3 if use_srun else 2)]
    runner = layout.runner(runner_digest())
    runner_args = run_call[len(run_call) - run_call[::-1].index(runner) - 1 :]
    assert runner_args[:3] == [runner, "run", layout.function("0" * 64)]
    assert runner_args[3].startswith(f"{layout.jobs_dir}/sb-")
    assert runner_args[3].endswith(".args.pkl")
    assert runner_args[4].startswith(f"{layout.results_dir}/sb-")
    want_env = {key: str(int(v)) if isinstance(v, bool) else str(v) for key, v in variables.items()}
    for seen in environments:
        assert {key: seen.get(key) for key in variables} == want_env


def accepted_python(python: str | None, refusal: str) -> str | None:
    """``python`` if a shell can split it into words; else check that it is refused in plain words."""
    if python is None:
        return None
    try:
        shlex.split(python)
    except ValueError:
        with pytest.raises(ValueError, match=refusal):
            if refusal.startswith("JobSpec"):
                JobSpec(python=python)
            else:
                SlurmSession("login.invalid", ssh_config=(), python=python)
        return None
    return python


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=text(multiline=True, min_size=1), value=line.filter(bool))
def test_any_option_name_is_either_refused_or_harmless(stub_bin: str, key: str, value: str) -> None:
    try:
        spec = JobSpec(options={key: value}, use_srun=True, srun_options={key: value})
    except ValueError as refused:
        assert "is not a valid option name" in str(refused)
        return
    script = render_as_the_session_does(spec, python="python3", workdir="/w", name="f", array=1)
    calls, _ = run_script(script, stub_bin)
    assert calls[0][:1] == ["srun"]
    assert calls[0][1 : 1 + len(expected_words({key: value}))] == expected_words({key: value})


def test_the_canary_detects_an_injection(stub_bin: str) -> None:
    """The check above would notice: an unquoted value does run the injected command."""
    for attack in ("$(sbinjected)", "; touch canary"):
        with pytest.raises(AssertionError, match="a value ran a command"):
            run_script(f"#!/bin/bash\npython3 {attack}\n", stub_bin)
