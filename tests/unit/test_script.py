"""Batch script rendering: golden record, exact examples, and quoting that holds against any value."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmbatch.slurm import CONDA_ACTIVATE_FAILED, render_script
from slurmbatch.spec import JobSpec

RECORD = Path(__file__).parents[2] / "slurmbatch" / "slurm" / "_sbatch_test_record.txt"
UPDATE_RECORD = "SLURMBATCH_UPDATE_RECORD"
RUN = [
    "python3",
    "/w/runner-0123456789ab.py",
    "run",
    "/w/fn/abc.pkl",
    "/w/jobs/sb-1/args.pkl",
    "/w/results/sb-1.pkl",
]
SESSION = {"job-name": "sb-00112233aabbccdd", "output": "/w/jobs/sb-1/stdout", "error": "/w/jobs/sb-1/stderr"}

GOLDEN_GPU = JobSpec(
    options={"nodes": 1, "ntasks": 4, "cpus-per-task": 8, "constraint": "gpu", "gpus": 4, "qos": "regular"},
    use_srun=True,
    srun_options={"cpu_bind": "cores", "gpus": 4, "gpu-bind": "single:1"},
)
GOLDEN_PROFILE = JobSpec(
    prerun_commands=["module load package/1.2.3", "srun --ntasks-per-node 1 dcgmi profile --pause"],
    use_srun=True,
    srun_options={"n": 4, "c": 8, "cpu-bind": "cores", "G": 4, "gpu-bind": "single:1"},
    srun_append="nsys profile --stats=true -t cuda --gpu-metrics-device=all",
    postrun_commands=["srun --ntasks-per-node 1 dcgmi profile --resume"],
)

# name -> (spec, render_script keyword arguments)
CASES: dict[str, tuple[JobSpec, dict[str, Any]]] = {
    "golden_gpu_srun": (GOLDEN_GPU, {}),
    "golden_profile": (GOLDEN_PROFILE, {}),
    "minimal": (JobSpec(), {}),
    "session_directives": (JobSpec(options={"time": "00:10:00", "J": "mine"}), {"directives": SESSION}),
    "array": (
        JobSpec(options={"time": "01:00:00"}, array_parallelism=4),
        {
            "run_argv": [*RUN[:4], "/w/jobs/sb-2/args-{task}.pkl", "/w/results/sb-2.{task}.pkl"],
            "directives": {**SESSION, "array": "0-99%4"},
        },
    ),
    "variables_and_conda": (
        JobSpec(
            setup=["module load python/3.11"],
            variables={
                "OMP_NUM_THREADS": 8,
                "SCALE": 0.5,
                "DEBUG": True,
                "QUIET": False,
                "GREETING": "it's $HOME",
            },
            conda_env="my env",
        ),
        {},
    ),
    "option_values": (
        JobSpec(
            options={
                "exclusive": True,
                "requeue": False,
                "reservation": None,
                "gres": ["gpu:2", "nvme"],
                "nodelist": ("n1", "n2"),
                "mem": 0,
                "comment": "a b#c\"d\\e'f $HOME",
                "mail-type": "END,FAIL",
                "t": "1-00:00:00",
            },
            use_srun=True,
            srun_options={"exact": True, "overlap": False, "export": ["ALL", "X=1 2"], "label": None},
        ),
        {},
    ),
    "requeue_signal": (
        JobSpec(requeue=True, requeue_signal="URG", postrun_commands=["echo done"]),
        {"directives": {"requeue": True, "signal": "B:URG@60"}},
    ),
    "requeue_srun": (
        JobSpec(requeue=True, use_srun=True, srun_options={"n": 2}),
        {"directives": {"requeue": True, "signal": "B:USR2@60"}},
    ),
    "epilogue": (
        JobSpec(use_srun=True, srun_options={"n": 2}, postrun_commands=["echo done"]),
        {"epilogue": [["python3", "/w/runner.py", "gather", "/w/results/sb-3.pkl", "--rank-dir", "/w/a b"]]},
    ),
}


def render_case(name: str) -> str:
    spec, kwargs = CASES[name]
    return render_script(spec, **{"run_argv": RUN, **kwargs})


def read_record() -> dict[str, str]:
    cases: dict[str, str] = {}
    for chunk in RECORD.read_text().split("### case: ")[1:]:
        name, _, script = chunk.partition("\n")
        cases[name.strip()] = script
    return cases


def test_scripts_match_the_record() -> None:
    rendered = {name: render_case(name) for name in CASES}
    if os.environ.get(UPDATE_RECORD) or not RECORD.exists():
        RECORD.write_text("".join(f"### case: {name}\n{script}" for name, script in rendered.items()))
    recorded = read_record()
    assert set(recorded) == set(rendered), f"cases changed; rerun with {UPDATE_RECORD}=1 and review the diff"
    for name, script in rendered.items():
        assert script == recorded[name], f"case {name!r} changed; rerun with {UPDATE_RECORD}=1 to record it"


def test_golden_gpu_example() -> None:
    lines = render_script(GOLDEN_GPU, run_argv=["python3", "r.py"]).splitlines()
    assert lines == [
        "#!/bin/bash",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --constraint=gpu",
        "#SBATCH --gpus=4",
        "#SBATCH --qos=regular",
        "srun --cpu_bind=cores --gpus=4 --gpu-bind=single:1 \\",
        "python3 r.py",
    ]


def test_golden_profile_example() -> None:
    lines = render_script(GOLDEN_PROFILE, run_argv=["python3", "r.py"]).splitlines()
    assert lines == [
        "#!/bin/bash",
        "module load package/1.2.3",
        "srun --ntasks-per-node 1 dcgmi profile --pause",
        "srun -n 4 -c 8 --cpu-bind=cores -G 4 --gpu-bind=single:1 \\",
        "nsys profile --stats=true -t cuda --gpu-metrics-device=all \\",
        "python3 r.py",
        "srun --ntasks-per-node 1 dcgmi profile --resume",
    ]


def test_body_order() -> None:
    spec = JobSpec(
        setup=["SETUP"],
        variables={"V": "1"},
        conda_env="env",
        prerun_commands=["PRE"],
        postrun_commands=["POST"],
    )
    lines = render_script(spec, run_argv=["RUN"], epilogue=[["EPI"]]).splitlines()
    order = [lines.index(marker) for marker in ("SETUP", "export V=1", "PRE", "RUN", "POST", "EPI")]
    assert order == sorted(order)
    conda = next(i for i, line in enumerate(lines) if line.startswith("conda activate env "))
    assert order[1] < conda < order[2]


def test_srun_without_options_is_bare() -> None:
    assert render_script(JobSpec(use_srun=True), run_argv=["python3"]).splitlines()[1:] == [
        "srun \\",
        "python3",
    ]


def test_user_options_win_over_session_directives_under_any_spelling() -> None:
    spec = JobSpec(options={"J": "mine", "output": "/mine/out", "cpus_per_task": 2})
    script = render_script(spec, run_argv=["x"], directives={**SESSION, "cpus-per-task": 1, "error": None})
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH -J mine",
        "#SBATCH --output=/mine/out",
        "#SBATCH --cpus_per_task=2",
    ]


def test_session_directives_follow_user_options() -> None:
    spec = JobSpec(options={"time": "00:10:00"})
    script = render_script(spec, run_argv=["x"], directives={"job-name": "sb-1", "array": "0-3"})
    assert script.splitlines()[1:4] == [
        "#SBATCH --time=00:10:00",
        "#SBATCH --job-name=sb-1",
        "#SBATCH --array=0-3",
    ]


def test_run_argv_must_be_a_list_of_words() -> None:
    with pytest.raises(ValueError, match="run_argv"):
        render_script(JobSpec(), run_argv="python3 r.py")
    with pytest.raises(ValueError, match="run_argv"):
        render_script(JobSpec(), run_argv=[])


def test_a_newline_in_a_session_directive_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        render_script(JobSpec(), run_argv=["x"], directives={"output": "/w/a\nb"})


# --- quoting holds against any value ----------------------------------------------------------------------

CANARY = "canary"  # a file in the script's working directory that no value may ever create
ATTACKS = [
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"'; touch {CANARY}; '",
    f'"; touch {CANARY}; "',
    f"\\'; touch {CANARY} #",
    f"> {CANARY}",
    f"\\\n touch {CANARY}",
    "$HOME",
    "\\",
    "'",
    '"',
    "#",
    " ",
    "\t",
    "!",
    "*",
    "~",
    "{a,b}",
]
one_line_text = st.text(st.characters(exclude_characters="\n\0", exclude_categories=["Cs"]))
any_text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))
one_line_attacks = st.sampled_from([attack for attack in ATTACKS if "\n" not in attack])


def hostile(*, multiline: bool) -> st.SearchStrategy[str]:
    """Text mixing arbitrary characters with shell metacharacters and injection attempts."""
    pieces = (
        st.one_of(any_text, st.sampled_from(ATTACKS))
        if multiline
        else st.one_of(one_line_text, one_line_attacks)
    )
    return st.lists(pieces, max_size=6).map("".join)


option_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,10}", fullmatch=True)
option_text = hostile(multiline=False).filter(bool)  # JobSpec refuses "" (True is the bare flag)
option_values = st.one_of(
    option_text,
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(option_text, st.integers()), min_size=1, max_size=3),
)
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_bash(script: str, cwd: str) -> subprocess.CompletedProcess[bytes]:
    path = Path(cwd, "job.sh")
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True)
    assert syntax.returncode == 0, syntax.stderr.decode()
    result = subprocess.run(["bash", str(path)], cwd=cwd, capture_output=True, timeout=30)
    assert not Path(cwd, CANARY).exists(), "a value escaped its quoting"
    return result


def expected_words(options: dict[str, Any]) -> list[str]:
    """The words an option mapping must reach sbatch or srun as, one flag (and value) at a time."""
    words: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = f"-{key}" if len(key) == 1 else f"--{key}"
        if value is True:
            words.append(flag)
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        words += [flag, text] if len(key) == 1 else [f"{flag}={text}"]
    return words


@QUICK
@given(
    srun_options=st.dictionaries(option_keys, option_values, max_size=5),
    sbatch_options=st.dictionaries(option_keys, option_values, max_size=5),
    argv=st.lists(hostile(multiline=True), max_size=4),
)
def test_srun_options_and_run_argv_reach_srun_exactly(
    srun_options: dict[str, Any], sbatch_options: dict[str, Any], argv: list[str]
) -> None:
    spec = JobSpec(
        options=sbatch_options,
        use_srun=True,
        srun_options=srun_options,
        srun_append="printf '%s\\0' APPENDED",  # srun's stand-in prints its own words then runs nothing
        setup=["srun() { printf '%s\\0' \"$@\"; }"],
    )
    with tempfile.TemporaryDirectory() as cwd:
        result = run_bash(render_script(spec, run_argv=["python3", *argv]), cwd)
    assert result.returncode == 0, result.stderr.decode()
    words = result.stdout.decode().split("\0")[:-1]
    assert words == [*expected_words(srun_options), "printf", "%s\\0", "APPENDED", "python3", *argv]


shell_names = st.from_regex(r"SBT_[A-Za-z0-9_]{0,8}", fullmatch=True)
variable_values = st.one_of(hostile(multiline=True), st.integers(), st.floats(allow_nan=False), st.booleans())


@QUICK
@given(
    variables=st.dictionaries(shell_names, variable_values, max_size=6),
    epilogue=st.lists(hostile(multiline=True)),
)
def test_variables_and_epilogue_arrive_exactly(variables: dict[str, Any], epilogue: list[str]) -> None:
    spec = JobSpec(variables=variables)
    script = render_script(
        spec, run_argv=["env", "-0"], epilogue=[["printf", "%s\\0", "EPILOGUE", *epilogue]]
    )
    with tempfile.TemporaryDirectory() as cwd:
        result = run_bash(script, cwd)
    assert result.returncode == 0, result.stderr.decode()
    env_part, _, epilogue_part = result.stdout.decode().partition("\0EPILOGUE\0")
    environment = dict(entry.split("=", 1) for entry in env_part.split("\0") if "=" in entry)
    expected = {name: str(int(v)) if isinstance(v, bool) else str(v) for name, v in variables.items()}
    assert {name: environment.get(name) for name in variables} == expected
    assert epilogue_part.split("\0")[:-1] == epilogue


@QUICK
@given(env=hostile(multiline=False).filter(str.strip))
def test_conda_env_name_is_quoted_and_failure_exits_99(env: str) -> None:
    fake_conda = 'conda() { if [ "$1" = activate ]; then printf "%s\\0" "$2"; return 1; fi; }'
    spec = JobSpec(setup=[fake_conda], conda_env=env)
    with tempfile.TemporaryDirectory() as cwd:
        result = run_bash(render_script(spec, run_argv=["echo", "ran"]), cwd)
    assert result.returncode == CONDA_ACTIVATE_FAILED
    assert result.stdout.decode() == env + "\0"
    assert "could not activate the conda environment" in result.stderr.decode()


# sbatch reads #SBATCH lines with its own word splitting, not bash's; ask the real sbatch how it reads them.
# It prints every word it found before it tries to reach a controller, which this config makes impossible.
SBATCH_CONF = """\
ClusterName=quoting
SlurmctldHost=localhost
SlurmctldPort=9
AuthType=auth/none
NodeName=n1 CPUs=1 State=UNKNOWN
PartitionName=p Nodes=n1 Default=YES
"""


def sbatch_words(script: str, workdir: str) -> list[str]:
    Path(workdir, "slurm.conf").write_text(SBATCH_CONF)
    Path(workdir, "job.sh").write_text(script)
    env = {**os.environ, "SLURM_CONF": str(Path(workdir, "slurm.conf"))}
    found: list[str] = []
    with subprocess.Popen(
        ["sbatch", "-vvv", "job.sh"], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        assert process.stderr is not None
        try:
            for raw in process.stderr:
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                match = re.fullmatch(r'sbatch: debug2: Found in script, argument "(.*)"', line, re.S)
                if match:
                    found.append(match.group(1))
                if "end of defined options" in line or "error:" in line:
                    break
        finally:
            process.kill()
    return found


# Options that sbatch stores as plain text while it reads the script, in both spellings.
FREE_TEXT_OPTIONS = ["comment", "J", "output", "e", "input", "A", "partition", "q", "wckey", "mail-user", "C"]


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs Slurm's sbatch command (no cluster)")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.one_of(option_text, st.lists(option_text, min_size=1, max_size=3)),
        min_size=len(FREE_TEXT_OPTIONS),
        max_size=len(FREE_TEXT_OPTIONS),
    )
)
def test_sbatch_reads_every_directive_back_exactly(values: list[Any]) -> None:
    options = dict(zip(FREE_TEXT_OPTIONS, values, strict=True))
    with tempfile.TemporaryDirectory() as workdir:
        found = sbatch_words(render_script(JobSpec(options=options), run_argv=["true"]), workdir)
    assert found == expected_words(options)


def test_directives_stay_comments_for_bash() -> None:
    spec = JobSpec(options={"comment": f"$(touch {CANARY})\\", "x": [a for a in ATTACKS if "\n" not in a]})
    with tempfile.TemporaryDirectory() as cwd:
        result = run_bash(render_script(spec, run_argv=["echo", "ok"]), cwd)
    assert result.stdout == b"ok\n"


def test_record_file_is_valid_bash() -> None:
    for name, script in read_record().items():
        result = subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True)
        assert result.returncode == 0, (name, result.stderr.decode())
        assert shlex.split(script.splitlines()[-1])  # the last line is a whole command


def test_the_batch_shell_passes_the_requeue_signal_on_and_keeps_the_exit_status(tmp_path: Path) -> None:
    # A stand-in for the runner: it takes the signal once ready (it starts with the signal ignored),
    # and ends with status 7 when it comes.
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR2, lambda *_: (print('got it', flush=True), sys.exit(7)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    script = tmp_path / "job.sh"
    warned = tmp_path / "warned file"
    text = render_script(
        JobSpec(requeue=True), run_argv=["python3", "-c", child], warned_file=shlex.quote(str(warned))
    )
    script.write_text(text)
    shell = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    assert shell.stdout is not None
    assert shell.stdout.readline() == "ready\n"
    shell.send_signal(signal.SIGUSR2)  # as --signal=B:USR2 does: the batch shell alone
    assert shell.wait(timeout=10) == 7
    assert shell.stdout.read() == "got it\n"
    assert warned.exists()  # noted for a runner that was not ready yet
