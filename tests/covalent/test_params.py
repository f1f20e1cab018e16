"""covalent-slurm-plugin's parameters mapped onto SlurmSession settings and a JobSpec: pure, no covalent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from slurmbatch import SlurmSession
from slurmbatch.slurm import render_script
from slurmbatch_covalent.params import (
    MIN_POLL_FREQ,
    PARAMETERS,
    PLUGIN_DEFAULTS,
    job_spec,
    resolve,
    session_settings,
)

pytestmark = pytest.mark.covalent

RUN = [
    "python3",
    "/w/runner-0123456789ab.py",
    "run",
    "/w/fn/abc.pkl",
    "/w/jobs/sb-1.args.pkl",
    "/w/results/sb-1.pkl",
]
RUN_LINE = " ".join(RUN)

# covalent-slurm-plugin 0.18's constructor: every one of these means the same here.
PLUGIN_PARAMETERS = [
    "username",
    "address",
    "ssh_key_file",
    "cert_file",
    "remote_workdir",
    "create_unique_workdir",
    "options",
    "variables",
    "conda_env",
    "prerun_commands",
    "postrun_commands",
    "use_srun",
    "srun_options",
    "srun_append",
    "bashrc_path",
    "slurm_path",
    "poll_freq",
    "cleanup",
    "cache_dir",
    "ignore_versions",
]
NEW_PARAMETERS = [
    "port",
    "known_hosts",
    "verify_host_key",
    "ssh_config",
    "python",
    "max_connections",
    "max_channels",
    "transport",
    "control_path",
    "totp_secret_file",
]

# The seed's [executors.slurm] example.
SEED_SECTION: dict[str, Any] = {
    "username": "user",
    "address": "login.cluster.org",
    "ssh_key_file": "/home/user/.ssh/id_rsa",
    "remote_workdir": "/scratch/user",
    "cache_dir": "/tmp/covalent",
    "options": {
        "nodes": 1,
        "ntasks": 4,
        "cpus-per-task": 8,
        "constraint": "gpu",
        "gpus": 4,
        "qos": "regular",
    },
    "srun_options": {"cpu_bind": "cores", "gpus": 4, "gpu-bind": "single:1"},
}
SEED_PREAMBLE = """\
#!/bin/bash
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=8
#SBATCH --constraint=gpu
#SBATCH --gpus=4
#SBATCH --qos=regular
"""
# The seed's ct.executor.SlurmExecutor(...) example.
SEED_INSTANCE: dict[str, Any] = {
    "remote_workdir": "/scratch/user/experiment1",
    "options": {"qos": "regular", "time": "01:30:00", "nodes": 1, "constraint": "gpu"},
    "prerun_commands": ["module load package/1.2.3", "srun --ntasks-per-node 1 dcgmi profile --pause"],
    "srun_options": {"n": 4, "c": 8, "cpu-bind": "cores", "G": 4, "gpu-bind": "single:1"},
    "srun_append": "nsys profile --stats=true -t cuda --gpu-metrics-device=all",
    "postrun_commands": ["srun --ntasks-per-node 1 dcgmi profile --resume"],
}
SEED_COMMANDS = f"""\
module load package/1.2.3
srun --ntasks-per-node 1 dcgmi profile --pause
srun -n 4 -c 8 --cpu-bind=cores -G 4 --gpu-bind=single:1 \\
nsys profile --stats=true -t cuda --gpu-metrics-device=all \\
{RUN_LINE}
srun --ntasks-per-node 1 dcgmi profile --resume
"""


def params(**given: Any) -> dict[str, Any]:
    """Resolved parameters with an address, as the executor holds them."""
    return resolve({"address": "login.cluster.org", **given}, {})


def script(resolved: dict[str, Any], *, node_id: int = 3, dispatch_id: str = "d-1") -> str:
    spec = job_spec(resolved, dispatch_id=dispatch_id, node_id=node_id)
    return render_script(spec, run_argv=RUN)


# ----------------------------------------------------------------------------------------- resolving
def test_every_plugin_parameter_and_the_new_ones_are_taken() -> None:
    assert set(PARAMETERS) == set(PLUGIN_PARAMETERS) | set(NEW_PARAMETERS)


def test_config_defaults_hold_no_none_and_no_empty_value_covalent_would_replace() -> None:
    assert all(value is not None for value in PLUGIN_DEFAULTS.values())
    # Covalent replaces a user's "" by a non-empty plugin default: such keys stay out of the defaults.
    assert "bashrc_path" not in PLUGIN_DEFAULTS and "slurm_path" not in PLUGIN_DEFAULTS
    assert PLUGIN_DEFAULTS["options"] == {}  # no {"parsable": ""} merged into every user's options


def test_defaults_match_the_plugin() -> None:
    resolved = resolve({}, {})
    assert resolved["remote_workdir"] == "covalent-workdir"
    assert resolved["use_srun"] is True
    assert resolved["cleanup"] is True
    assert resolved["create_unique_workdir"] is False
    assert resolved["poll_freq"] == 5
    assert resolved["bashrc_path"] == "$HOME/.bashrc"
    assert resolved["slurm_path"] == "/usr/bin"
    assert resolved["cert_file"] is None and resolved["port"] is None
    assert resolved["max_connections"] == 2 and resolved["max_channels"] == 8


def test_config_fills_what_is_not_given_even_create_unique_workdir() -> None:
    # The plugin ignored the config's create_unique_workdir for instances (its signature default was False).
    config = {
        "username": "me",
        "options": {"time": "01:00:00"},
        "create_unique_workdir": True,
        "poll_freq": 30,
    }
    resolved = resolve({}, config)
    assert resolved["username"] == "me"
    assert resolved["options"] == {"time": "01:00:00"}
    assert resolved["create_unique_workdir"] is True
    assert resolved["poll_freq"] == 30
    resolved["options"]["time"] = "changed"
    assert config["options"] == {"time": "01:00:00"}  # copied, not shared


@pytest.mark.parametrize(
    ("name", "falsy", "config_value"),
    [
        ("options", {}, {"time": "01:00:00"}),
        ("srun_options", {}, {"n": 4}),
        ("variables", {}, {"A": "1"}),
        ("prerun_commands", [], ["module load x"]),
        ("postrun_commands", [], ["echo done"]),
        ("conda_env", "", "myenv"),
        ("srun_append", "", "nsys profile"),
        ("bashrc_path", "", "/etc/bashrc"),
        ("slurm_path", "", "/opt/slurm/bin"),
        ("poll_freq", 0, 30),
        ("cleanup", False, True),
        ("use_srun", False, True),
        ("create_unique_workdir", False, True),
        ("ignore_versions", False, True),
        ("username", "", "me"),
        ("ssh_key_file", "", "/keys/id"),
    ],
)
def test_an_explicit_falsy_value_is_honoured(name: str, falsy: Any, config_value: Any) -> None:
    assert resolve({name: falsy}, {name: config_value})[name] == falsy


def test_unknown_parameters_and_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown parameter"):
        resolve({"sshproxy": {}}, {})
    with pytest.raises(TypeError, match="options must be a dict"):
        resolve({"options": ["time"]}, {})
    with pytest.raises(TypeError, match="poll_freq must be"):
        resolve({"poll_freq": True}, {})
    with pytest.raises(TypeError, match="use_srun must be a bool"):
        resolve({"use_srun": "yes"}, {})


def test_key_and_certificate_paths_are_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    resolved = resolve({"ssh_key_file": "~/.ssh/id_ed25519", "cert_file": "~/.ssh/id_ed25519-cert.pub"}, {})
    assert resolved["ssh_key_file"] == str(tmp_path / ".ssh/id_ed25519")
    assert resolved["cert_file"] == str(tmp_path / ".ssh/id_ed25519-cert.pub")


# ----------------------------------------------------------------------------------------- session
def test_session_settings_map_the_connection_parameters() -> None:
    settings = session_settings(
        params(
            username="me",
            port=2222,
            ssh_key_file="/keys/id",
            cert_file="/keys/id-cert.pub",
            known_hosts="/keys/known_hosts",
            verify_host_key=False,
            ssh_config="/keys/ssh_config",
            remote_workdir="/scratch/me",
            python="/opt/py/bin/python3",
            max_connections=3,
            max_channels=5,
            poll_freq=12,
            cleanup=False,
        )
    )
    assert settings.host == "login.cluster.org"
    assert (settings.user, settings.port) == ("me", 2222)
    assert (settings.key_file, settings.cert_file) == ("/keys/id", "/keys/id-cert.pub")
    assert (settings.known_hosts, settings.verify_host_key) == ("/keys/known_hosts", False)
    assert settings.ssh_config == ("/keys/ssh_config",)
    assert settings.remote_workdir == "/scratch/me"
    assert settings.python == "/opt/py/bin/python3"
    assert (settings.max_connections, settings.max_channels) == (3, 5)
    assert settings.status_interval == (12.0, 30.0)
    assert settings.cleanup is False
    assert settings.check_remote_python is True


def test_session_defaults_leave_the_ssh_config_in_charge() -> None:
    settings = session_settings(params())
    # Empty values mean "not set here": user, port, key and known_hosts may come from ~/.ssh/config.
    assert (settings.user, settings.port, settings.key_file, settings.known_hosts) == (None, None, None, None)
    assert settings.ssh_config is None  # the SDK's default: ~/.ssh/config
    assert session_settings(params(ssh_config=[])).ssh_config == ()
    assert session_settings(params(ssh_config=["/a", "/b"])).ssh_config == ("/a", "/b")
    assert settings.verify_host_key is True


def test_session_kwargs_open_a_session() -> None:
    settings = session_settings(params(username="me", port=2222, ssh_config=[]))
    session = SlurmSession(settings.host, **settings.session_kwargs())
    assert (session.settings.host, session.settings.user, session.settings.port) == (
        "login.cluster.org",
        "me",
        2222,
    )


def test_mfa_site_keys_choose_the_transport_and_answer_codes_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "totp"
    secret.write_text("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")
    given = params(
        transport="openssh", control_path="/tmp/cm-me", totp_secret_file=str(secret), ssh_config=[]
    )
    kwargs = session_settings(given).session_kwargs()
    assert (kwargs["transport"], kwargs["control_path"]) == ("openssh", "/tmp/cm-me")
    session = SlurmSession("login.cluster.org", **kwargs)
    handler = session.settings.kbdint
    assert handler is not None
    answer = handler("", "", [("Verification code: ", False)])
    assert isinstance(answer, list) and len(answer) == 1 and len(answer[0]) == 6 and answer[0].isdigit()
    assert "kbdint" not in session_settings(params()).session_kwargs()  # keys only, unless a secret is named
    with pytest.raises(ValueError, match=r"totp_secret_file .* cannot be read"):
        session_settings(params(totp_secret_file=str(tmp_path / "missing"))).session_kwargs()
    with pytest.raises(ValueError, match="transport must be one of"):
        session_settings(params(transport="paramiko"))


def test_poll_freq_sets_the_scheduler_interval_with_a_floor() -> None:
    assert session_settings(params(poll_freq=5)).status_interval == (5.0, 30.0)
    assert session_settings(params(poll_freq=0)).status_interval == (MIN_POLL_FREQ, 30.0)
    assert session_settings(params(poll_freq=60)).status_interval == (60.0, 60.0)


def test_version_checks_are_skipped_with_ignore_versions_or_a_conda_env() -> None:
    assert session_settings(params(ignore_versions=True)).check_remote_python is False
    # The login node's python is not the one the job's conda environment provides.
    assert session_settings(params(conda_env="myenv")).check_remote_python is False


def test_equal_parameters_give_equal_hashable_settings() -> None:
    first = session_settings(params(username="me", options={"time": "1"}))
    second = session_settings(params(username="me", options={"time": "2"}, prerun_commands=["x"]))
    assert first == second and hash(first) == hash(second)  # job settings do not split the pool
    assert first != session_settings(params(username="someone-else"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"address": ""}, "needs an address"),
        ({"cert_file": "/keys/id-cert.pub"}, "cert_file needs ssh_key_file"),
        ({"remote_workdir": ""}, "remote_workdir is empty"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
    ],
)
def test_unusable_settings_are_refused_in_plain_words(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        session_settings(params(**given))


# ----------------------------------------------------------------------------------------- job script
def test_seed_config_section_gives_the_seed_preamble_and_srun_line() -> None:
    text = script(resolve({}, SEED_SECTION))
    assert text.startswith(SEED_PREAMBLE), text
    assert "\nsrun --cpu_bind=cores --gpus=4 --gpu-bind=single:1 \\\n" + RUN_LINE + "\n" in text
    assert "parsable" not in text


def test_seed_executor_instance_gives_the_seed_commands() -> None:
    text = script(params(**SEED_INSTANCE))
    assert SEED_COMMANDS in text, text
    assert text.startswith(
        "#!/bin/bash\n#SBATCH --qos=regular\n#SBATCH --time=01:30:00\n#SBATCH --nodes=1\n#SBATCH --constraint=gpu\n"
    )


def test_the_whole_script_of_the_seed_instance() -> None:
    text = script(params(**SEED_INSTANCE), node_id=3, dispatch_id="d-1")
    assert text == (
        "#!/bin/bash\n"
        "#SBATCH --qos=regular\n"
        "#SBATCH --time=01:30:00\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --constraint=gpu\n"
        "cd -- /scratch/user/experiment1 || exit 1\n"
        "source $HOME/.bashrc\n" + SEED_COMMANDS
    )
    assert job_spec(params(**SEED_INSTANCE), dispatch_id="d-1", node_id=3).job_name == "covalent-3-d-1"


def test_option_values_render_properly() -> None:
    options = {
        "exclusive": "",
        "requeue": True,
        "hold": False,
        "mem": 0,
        "nodelist": ["n1", "n2"],
        "J": "mine",
        "parsable": "",
        "chdir": "/elsewhere",
        "comment": "a b",
    }
    text = script(params(options=options, use_srun=False))
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --exclusive",
        "#SBATCH --requeue",
        "#SBATCH --mem=0",
        "#SBATCH --nodelist=n1,n2",
        "#SBATCH -J mine",
        '#SBATCH --comment="a b"',
    ]


def test_srun_options_with_the_plugins_empty_string_flags() -> None:
    text = script(params(srun_options={"exact": "", "n": 2, "label": None, "overlap": False}))
    assert f"srun --exact -n 2 --label \\\n{RUN_LINE}\n" in text


def test_without_srun_the_srun_settings_are_dropped() -> None:
    spec = job_spec(
        params(use_srun=False, srun_options={"n": 4}, srun_append="nsys profile"), dispatch_id="d", node_id=0
    )
    assert (spec.use_srun, dict(spec.srun_options), spec.srun_append) == (False, {}, "")
    assert script(params(use_srun=False)).endswith(f"\n{RUN_LINE}\n")


def test_conda_activate_only_with_a_conda_env() -> None:
    assert "conda" not in script(params())
    assert "conda" not in script(params(conda_env=""))
    assert "conda activate base ||" in script(params(conda_env="base"))
    assert "conda activate myenv ||" in script(params(conda_env="myenv"))


def test_shell_setup_lines_in_the_plugins_order() -> None:
    text = script(
        params(
            remote_workdir="covalent-workdir",
            bashrc_path="/etc/profile.d/site.sh",
            slurm_path="/opt/slurm/bin",
            variables={"OMP_NUM_THREADS": 8, "PATH": "$PATH:/opt/tools", "GREETING": "hello world"},
            conda_env="myenv",
            prerun_commands=["echo pre"],
        )
    )
    body = text.split("\n", 1)[1]
    assert body.startswith(
        'cd -- "$HOME"/covalent-workdir || exit 1\n'
        "source /etc/profile.d/site.sh\n"
        'export PATH="$PATH":/opt/slurm/bin\n'
        'export OMP_NUM_THREADS="8"\n'
        'export PATH="$PATH:/opt/tools"\n'
        'export GREETING="hello world"\n'
        'eval "$(conda shell.bash hook 2>/dev/null)"\n'
        "conda activate myenv || "
    ), body
    assert body.index("conda activate") < body.index("echo pre") < body.index(RUN_LINE)


def test_bashrc_and_slurm_path_can_be_switched_off() -> None:
    text = script(params(bashrc_path="", slurm_path=""))
    assert "source $HOME" not in text
    # No slurm_path: load Slurm's environment module, as the plugin did.
    assert "source /etc/profile\nif module whatis slurm &> /dev/null; then module load slurm; fi\n" in text
    assert "PATH" not in script(params())  # /usr/bin is on every PATH already


@pytest.mark.parametrize(
    ("workdir", "unique", "line"),
    [
        ("/scratch/me", False, "cd -- /scratch/me || exit 1"),
        ("covalent-workdir", False, 'cd -- "$HOME"/covalent-workdir || exit 1'),
        ("~/work dir", False, "cd -- \"$HOME\"/'work dir' || exit 1"),
        ("/scratch/me", True, "mkdir -p -- /scratch/me/d-1/node_3 && cd -- /scratch/me/d-1/node_3 || exit 1"),
    ],
)
def test_the_job_runs_in_the_work_directory(workdir: str, unique: bool, line: str) -> None:
    text = script(params(remote_workdir=workdir, create_unique_workdir=unique), dispatch_id="d-1", node_id=3)
    assert text.splitlines()[1] == line


def test_multi_line_commands_keep_working() -> None:
    text = script(params(prerun_commands=["module purge\nmodule load gcc"], postrun_commands="echo done"))
    assert "module purge\nmodule load gcc\n" in text
    assert text.endswith(f"{RUN_LINE}\necho done\n")


def test_an_invalid_variable_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        job_spec(params(variables={"MY-VAR": "1"}), dispatch_id="d", node_id=0)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_rendered_scripts_are_valid_bash() -> None:
    every = params(
        **SEED_INSTANCE,
        variables={"A": "1", "B": "$A:x"},
        conda_env="my env",
        create_unique_workdir=True,
        slurm_path="",
    )
    for text in (script(every), script(resolve({}, SEED_SECTION)), script(params(use_srun=False))):
        checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr
        assert re.search(r"^#!/bin/bash\n", text)


@pytest.mark.parametrize(
    ("slurm_path", "login_lines"),
    [
        ("/usr/bin", ()),
        ("/opt/slurm/bin", ('export PATH="$PATH":/opt/slurm/bin',)),
        ("", ("source /etc/profile", "if module whatis slurm &> /dev/null; then module load slurm; fi")),
    ],
)
def test_slurm_path_also_prepares_the_login_nodes_slurm_commands(
    slurm_path: str, login_lines: tuple[str, ...]
) -> None:
    settings = session_settings(params(slurm_path=slurm_path))
    assert settings.slurm_setup == login_lines
    assert settings.session_kwargs()["slurm_setup"] == login_lines
    SlurmSession(settings.host, **settings.session_kwargs())  # SlurmSession takes them as they are


def test_covalent_retries_become_job_spec_retries_of_node_failures_and_preemptions() -> None:
    from slurmbatch import JobNodeFailure, JobPreempted

    spec = job_spec(params(**SEED_INSTANCE), dispatch_id="d-1", node_id=3, retries=2)
    assert (spec.retries, spec.retry_on) == (2, (JobNodeFailure, JobPreempted))
    assert job_spec(params(**SEED_INSTANCE), dispatch_id="d-1", node_id=3).retries == 0
    assert job_spec(params(**SEED_INSTANCE), dispatch_id="d-1", node_id=3, retries=-1).retries == 0
