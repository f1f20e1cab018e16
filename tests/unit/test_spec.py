"""JobSpec: defaults, immutability, hashing, and errors that name the field and the bad value."""

from __future__ import annotations

import pickle
import re
from typing import Any

import attrs
import pytest

from slurmbatch.spec import JobSpec


def test_defaults() -> None:
    spec = JobSpec()
    assert dict(spec.options) == {} and dict(spec.srun_options) == {} and dict(spec.variables) == {}
    assert (spec.setup, spec.prerun_commands, spec.postrun_commands) == ((), (), ())
    assert (spec.srun_append, spec.use_srun, spec.coalesce) == ("", False, True)
    assert (spec.conda_env, spec.python, spec.job_name, spec.array_parallelism) == (None, None, None, None)


def test_every_field_is_documented_for_users() -> None:
    doc = JobSpec.__doc__ or ""
    for field in attrs.fields(JobSpec):
        assert re.search(rf"^\s+{field.name}: ", doc, re.MULTILINE), f"{field.name} is not documented"


def test_plain_containers_are_frozen_but_keep_their_order() -> None:
    spec = JobSpec(
        options={"time": "1:00", "gres": ["gpu:1", "nvme"], "nodes": 2},
        prerun_commands=["a", "b"],
        variables={"B": 1, "A": "x"},
    )
    assert list(spec.options) == ["time", "gres", "nodes"]
    assert spec.options["gres"] == ("gpu:1", "nvme")
    assert spec.prerun_commands == ("a", "b")
    assert list(spec.variables.items()) == [("B", 1), ("A", "x")]
    with pytest.raises(TypeError):
        spec.options["time"] = "2:00"  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.use_srun = True  # type: ignore[misc]


def test_the_caller_can_change_its_dict_afterwards_without_changing_the_spec() -> None:
    options: dict[str, Any] = {"time": "1:00"}
    spec = JobSpec(options=options)
    options["time"] = "2:00"
    assert spec.options["time"] == "1:00"


def test_equal_specs_hash_equal_and_group_in_a_dict() -> None:
    first = JobSpec(options={"time": "1:00", "gres": ["gpu:1"]}, setup=["module load x"])
    second = JobSpec(options={"gres": ("gpu:1",), "time": "1:00"}, setup=("module load x",))
    assert first == second and hash(first) == hash(second)
    assert len({first: 1, second: 2}) == 1
    assert first.options == {"time": "1:00", "gres": ("gpu:1",)}


@pytest.mark.parametrize(("a", "b"), [(True, 1), (1, 1.0), ("1", 1), (["1"], "1")])
def test_values_that_render_differently_are_not_equal(a: Any, b: Any) -> None:
    assert JobSpec(options={"x": a}) != JobSpec(options={"x": b})


def test_evolve_revalidates() -> None:
    spec = JobSpec(options={"time": "1:00"})
    assert attrs.evolve(spec, options={**spec.options, "mem": "4G"}).options == {"time": "1:00", "mem": "4G"}
    with pytest.raises(ValueError, match="array_parallelism"):
        attrs.evolve(spec, array_parallelism=0)


def test_specs_survive_pickling_and_compare_with_plain_dicts() -> None:
    spec = JobSpec(options={"gres": ["gpu:1"]}, variables={"A": 1})
    assert pickle.loads(pickle.dumps(spec)) == spec
    unrelated: list[object] = [{"gres": [{}]}, ["gres"]]
    assert all(spec.options != other for other in unrelated)


def test_repr_reads_like_the_input() -> None:
    assert "options={'time': '1:00'}" in repr(JobSpec(options={"time": "1:00"}))


def test_srun_fields_need_use_srun() -> None:
    with pytest.raises(ValueError, match=r"srun_options is set but use_srun is False"):
        JobSpec(srun_options={"n": 2})
    with pytest.raises(ValueError, match=r"srun_append is set but use_srun is False"):
        JobSpec(srun_append="nsys profile")
    JobSpec(use_srun=True, srun_options={"n": 2}, srun_append="nsys profile")


# (keyword arguments, error type, words the message must contain)
BAD_SPECS: list[tuple[dict[str, Any], type[Exception], list[str]]] = [
    (
        {"options": {"time": {"h": 1}}},
        TypeError,
        ["JobSpec.options['time']", "{'h': 1} (of type dict)", "string"],
    ),
    ({"options": {"x": object}}, TypeError, ["JobSpec.options['x']", "type"]),
    ({"options": {"gres": ["gpu", None]}}, TypeError, ["JobSpec.options['gres']", "None"]),
    ({"options": {"gres": [True]}}, TypeError, ["JobSpec.options['gres']", "True"]),
    ({"options": {"gres": []}}, ValueError, ["JobSpec.options['gres']", "empty list", "None"]),
    ({"options": {"parsable": ""}}, ValueError, ["JobSpec.options['parsable']", "empty string", "True"]),
    ({"options": {"--time": "1:00"}}, ValueError, ["JobSpec.options", "'--time'", "without leading dashes"]),
    ({"options": {"my option": 1}}, ValueError, ["'my option'", "not a valid option name"]),
    ({"options": {"": 1}}, ValueError, ["''", "not a valid option name"]),
    ({"options": {1: 1}}, ValueError, ["1", "not a valid option name"]),
    ({"options": {"comment": "a\nb"}}, ValueError, ["JobSpec.options['comment']", "newline", "single line"]),
    ({"options": "--time=1"}, TypeError, ["JobSpec.options", "mapping", "'--time=1'"]),
    ({"use_srun": True, "srun_options": {"n": {1}}}, TypeError, ["JobSpec.srun_options['n']", "set"]),
    ({"variables": {"MY-VAR": 1}}, ValueError, ["JobSpec.variables", "'MY-VAR'", "letters, digits"]),
    ({"variables": {"1X": 1}}, ValueError, ["'1X'", "not starting with a digit"]),
    ({"variables": {"X": None}}, TypeError, ["JobSpec.variables['X']", "None", "string, number or bool"]),
    ({"variables": {"X": ["a"]}}, TypeError, ["JobSpec.variables['X']", "('a',)"]),
    ({"variables": {"X": "a\0b"}}, ValueError, ["JobSpec.variables['X']", "NUL"]),
    ({"setup": "module load x"}, TypeError, ["JobSpec.setup", "list of shell lines", "setup=[line]"]),
    ({"prerun_commands": ["ok", "a\nb"]}, ValueError, ["JobSpec.prerun_commands[1]", "newline", "'a\\nb'"]),
    ({"postrun_commands": ["a\0b"]}, ValueError, ["JobSpec.postrun_commands[0]", "NUL"]),
    ({"postrun_commands": [1]}, TypeError, ["JobSpec.postrun_commands[0]", "1 (of type int)"]),
    ({"use_srun": True, "srun_append": "a\nb"}, ValueError, ["JobSpec.srun_append", "newline"]),
    ({"use_srun": "yes"}, TypeError, ["JobSpec.use_srun", "True or False", "'yes'"]),
    ({"coalesce": 1}, TypeError, ["JobSpec.coalesce", "True or False"]),
    ({"conda_env": ""}, ValueError, ["JobSpec.conda_env", "empty", "None"]),
    ({"conda_env": 3}, TypeError, ["JobSpec.conda_env", "3 (of type int)"]),
    ({"python": "python3\n"}, ValueError, ["JobSpec.python", "newline"]),
    ({"job_name": "  "}, ValueError, ["JobSpec.job_name", "empty"]),
    ({"array_parallelism": 0}, ValueError, ["JobSpec.array_parallelism", "0", "at least 1"]),
    ({"array_parallelism": True}, TypeError, ["JobSpec.array_parallelism", "whole number"]),
    ({"array_parallelism": 2.0}, TypeError, ["JobSpec.array_parallelism", "2.0"]),
]


@pytest.mark.parametrize(("kwargs", "error", "words"), BAD_SPECS)
def test_bad_values_are_refused_in_plain_words(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        JobSpec(**kwargs)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_good_values_are_accepted() -> None:
    spec = JobSpec(
        options={
            "t": "00:10:00",
            "exclusive": True,
            "requeue": False,
            "x": None,
            "mem": 0,
            "cpu_bind": "cores",
        },
        variables={"A": "a b", "B": 2, "C": 0.5, "D": True, "_E": "multi\nline"},
        python="/opt/py/bin/python3",
        job_name="my job",
        conda_env="/path/to env",
        array_parallelism=1,
    )
    assert spec.variables["_E"] == "multi\nline"


def test_retries_and_requeue_settings() -> None:
    from slurmbatch import JobNodeFailure, JobPreempted, JobTimeout

    spec = JobSpec(retries=2, retry_on=[JobTimeout, ValueError])
    assert spec.retry_on == (JobTimeout, ValueError)
    assert JobSpec().retry_on == (JobNodeFailure, JobPreempted)
    assert JobSpec(retry_on=JobTimeout).retry_on == (JobTimeout,)
    assert hash(spec) == hash(JobSpec(retries=2, retry_on=(JobTimeout, ValueError)))
    assert (JobSpec().requeue_signal, JobSpec().signal_lead) == ("USR2", 60)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"retries": -1}, ValueError, "0 (no retry) or more"),
        ({"retries": 1.5}, TypeError, "whole number"),
        ({"retries": True}, TypeError, "whole number"),
        ({"retry_on": ("JobTimeout",)}, TypeError, "exception classes"),
        ({"retry_on": 3}, TypeError, "tuple of exception classes"),
        ({"requeue_signal": "USR1"}, ValueError, "NCCL"),
        ({"requeue_signal": "SIG USR2"}, ValueError, "without the SIG prefix"),
        ({"requeue_signal": "KILL"}, ValueError, "cannot be caught"),
        ({"signal_lead": 0}, ValueError, "between 1 and 65535"),
        ({"signal_lead": "60"}, TypeError, "whole number of seconds"),
    ],
)
def test_bad_retry_and_requeue_settings_say_what_to_write(
    fields: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        JobSpec(**fields)  # type: ignore[arg-type]
