"""What a job asks of Slurm: resources, environment, and the shell lines around the Python call."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import attrs

from ._errors import JobNodeFailure, JobPreempted

__all__ = ["JobSpec", "OptionValue", "VariableValue"]

OptionValue: TypeAlias = str | int | float | bool | Sequence[str | int | float] | None
"""The value of one `sbatch` or `srun` option.

A string or number gives `--key=value` (`-k value` for one-letter keys); `True` gives the bare flag
(`--exclusive`); `False` and `None` leave the option out; a list or tuple gives its items joined with
commas (`--gres=gpu:2,nvme`).
"""

VariableValue: TypeAlias = str | int | float | bool
"""The value of one exported environment variable; `True`/`False` export as `1`/`0`."""

_V = TypeVar("_V")

_OPTION_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FrozenMapping(Mapping[str, _V]):
    """A read-only, hashable mapping that keeps the order its items were given in.

    Two instances are equal when they hold the same keys with values of the same type and value, in any
    order: `{"exclusive": True}` and `{"exclusive": 1}` render differently, so they are not equal.
    """

    __slots__ = ("_identity", "_items")

    def __init__(self, items: Mapping[str, _V] | None = None) -> None:
        self._items: dict[str, _V] = dict(items or {})
        # Computed on first use: values are validated after conversion, and may not be hashable yet.
        self._identity: frozenset[tuple[str, object]] | None = None

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _key(self) -> frozenset[tuple[str, object]]:
        if self._identity is None:
            self._identity = frozenset((key, _typed(value)) for key, value in self._items.items())
        return self._identity

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMapping):
            return self._key() == other._key()
        if isinstance(other, Mapping):
            try:
                return self == FrozenMapping(other)
            except TypeError:  # unhashable values: not something a spec can hold
                return False
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._items)


def _typed(value: object) -> object:
    """A hashable stand-in for *value* that tells `1`, `1.0` and `True` apart."""
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_typed(item) for item in value))
    return (type(value).__name__, value)


def _freeze_options(value: Mapping[str, OptionValue]) -> Mapping[str, OptionValue]:
    return _freeze(value)


def _freeze_variables(value: Mapping[str, VariableValue]) -> Mapping[str, VariableValue]:
    return _freeze(value)


def _freeze(value: Mapping[str, _V]) -> Mapping[str, _V]:
    given: object = value  # typed as a mapping, but callers may pass anything
    if not isinstance(given, Mapping):
        return value  # passed on untouched, so the validator can name the field
    return FrozenMapping({key: _freeze_sequence(item) for key, item in value.items()})


def _freeze_sequence(value: _V) -> _V:
    return tuple(value) if isinstance(value, list) else value  # type: ignore[return-value]


def _to_tuple(value: Sequence[str]) -> Sequence[str]:
    # A lone string is passed on untouched (not split into characters), so the validator can reject it.
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _describe(value: object) -> str:
    return f"{value!r} (of type {type(value).__name__})"


def _check_line(where: str, line: object) -> None:
    if not isinstance(line, str):
        raise TypeError(f"JobSpec.{where} must be a string, not {_describe(line)}.")
    if "\n" in line or "\0" in line:
        what = "a newline" if "\n" in line else "a NUL character"
        raise ValueError(
            f"JobSpec.{where} contains {what}: {line!r}. Give each shell command as its own one-line item."
        )


def _check_options(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    name = attribute.name
    if not isinstance(value, FrozenMapping):
        raise TypeError(
            f"JobSpec.{name} must be a mapping of option names to values, not {_describe(value)}."
        )
    for key, item in value.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
            raise ValueError(
                f"JobSpec.{name}: {key!r} is not a valid option name. Write it without leading dashes, "
                "using letters, digits, '-' and '_' only, e.g. 'time' or 't'."
            )
        _check_option_value(name, key, item)


def _check_option_value(name: str, key: str, value: object) -> None:
    hint = "Use a string, a number, True/False/None, or a list of strings and numbers."
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if not value:
            # sbatch drops an empty quoted word on an #SBATCH line, so "-J ''" would lose its value.
            raise ValueError(
                f"JobSpec.{name}[{key!r}] is an empty string. Use True for a bare flag such as "
                "--exclusive, or None to leave the option out."
            )
        _check_option_text(name, key, value)
        return
    if not isinstance(value, tuple):
        raise TypeError(f"JobSpec.{name}[{key!r}] is {_describe(value)}. {hint}")
    if not value:
        raise ValueError(
            f"JobSpec.{name}[{key!r}] is an empty list. Give at least one value, or None to leave it out."
        )
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise TypeError(f"JobSpec.{name}[{key!r}] holds {_describe(item)}. {hint}")
        if isinstance(item, str):
            _check_option_text(name, key, item)


def _check_option_text(name: str, key: str, text: str) -> None:
    if "\n" in text or "\0" in text:
        raise ValueError(
            f"JobSpec.{name}[{key!r}] is {text!r}, which contains a newline or NUL character; "
            "an option value must be a single line."
        )


def _check_variables(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, FrozenMapping):
        raise TypeError(f"JobSpec.variables must be a mapping of names to values, not {_describe(value)}.")
    for key, item in value.items():
        if not isinstance(key, str) or not _SHELL_NAME.fullmatch(key):
            raise ValueError(
                f"JobSpec.variables: {key!r} is not a valid environment variable name. Use letters, digits "
                "and '_', not starting with a digit."
            )
        if not isinstance(item, (str, int, float)):
            raise TypeError(f"JobSpec.variables[{key!r}] is {_describe(item)}. Use a string, number or bool.")
        if isinstance(item, str) and "\0" in item:
            raise ValueError(f"JobSpec.variables[{key!r}] contains a NUL character, which no shell can hold.")


def _check_lines(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise TypeError(
            f"JobSpec.{attribute.name} must be a list of shell lines, not {_describe(value)}. "
            f"For one line, write {attribute.name}=[line]."
        )
    for index, line in enumerate(value):
        _check_line(f"{attribute.name}[{index}]", line)


def _check_text(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_line(attribute.name, value)


def _check_optional_name(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    _check_line(attribute.name, value)
    if not str(value).strip():
        raise ValueError(
            f"JobSpec.{attribute.name} is empty. Give a non-empty string, or None for the default."
        )


def interpreter_words(python: str, *, setting: str) -> list[str]:
    """The words of an interpreter setting (it may carry arguments), split as a shell would, or a
    `ValueError` that names `setting` and says how to write it."""
    try:
        return shlex.split(python)
    except ValueError as exc:
        raise ValueError(
            f"{setting} is {python!r}, which cannot be split into words as a shell would: {exc}. Close every "
            "quote and escape trailing backslashes, e.g. '/opt/conda/bin/python3' or "
            "'\"/path with spaces/python3\" -X dev'."
        ) from None


def _check_python(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_optional_name(spec, attribute, value)
    if value is not None:
        interpreter_words(str(value), setting="JobSpec.python")


def _check_flag(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"JobSpec.{attribute.name} must be True or False, not {_describe(value)}.")


def _check_parallelism(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"JobSpec.array_parallelism must be a whole number or None, not {_describe(value)}.")
    if value < 1:
        raise ValueError(
            f"JobSpec.array_parallelism is {value}; it must be at least 1, or None for no limit."
        )


def _check_retries(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"JobSpec.retries must be a whole number, not {_describe(value)}.")
    if value < 0:
        raise ValueError(f"JobSpec.retries is {value}; it must be 0 (no retry) or more.")


def _to_types(value: object) -> object:
    # One class alone is taken as a tuple of one; a list becomes a tuple (the spec stays hashable).
    if isinstance(value, type):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _check_retry_on(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise TypeError(
            f"JobSpec.retry_on must be a tuple of exception classes, not {_describe(value)}, "
            "e.g. retry_on=(JobNodeFailure, JobPreempted)."
        )
    for item in value:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(
                f"JobSpec.retry_on holds {_describe(item)}; give exception classes, e.g. JobNodeFailure."
            )


def _check_signal(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _SIGNAL_NAME.fullmatch(value):
        raise ValueError(
            f"JobSpec.requeue_signal is {value!r}; give a signal name without the SIG prefix, e.g. 'USR2'."
        )
    if value.upper() in ("USR1", "KILL", "STOP"):
        why = "NCCL and other libraries use it" if value.upper() == "USR1" else "it cannot be caught"
        raise ValueError(f"JobSpec.requeue_signal cannot be {value!r}: {why}. Use e.g. 'USR2' or 'URG'.")


def _check_lead(spec: JobSpec, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"JobSpec.signal_lead must be a whole number of seconds, not {_describe(value)}.")
    if not 0 < value <= 65535:
        raise ValueError(f"JobSpec.signal_lead is {value}; give seconds between 1 and 65535.")


def _default_retry_on() -> tuple[type[BaseException], ...]:
    return (JobNodeFailure, JobPreempted)


_SIGNAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@attrs.frozen(kw_only=True)
class JobSpec:
    """How to run a function as a Slurm job. Immutable and hashable; every field has a default.

    The batch script is built in this order: `#SBATCH` lines from `options`, then `setup`,
    the `export` lines for `variables`, `conda activate` for `conda_env`,
    `prerun_commands`, the line that runs the function (inside `srun` when `use_srun`), and
    `postrun_commands`. Shell lines are written into the script as given, one item per line, so
    they may use pipes, `$VARIABLES` and quotes on purpose; option and variable values are quoted for
    you.

    Attributes:
        options: `#SBATCH` options, in the order given, e.g. ``{"time": "00:10:00", "mem": "4G",
            "gres": ["gpu:1"], "exclusive": True}``. Keys are option names without dashes; one-letter keys
            render as `-k value`, longer ones as `--key=value`. `True` is a bare flag, `False` and
            `None` leave the option out, lists are joined with commas. The session adds `job-name`,
            `output`, `error` and (for maps) `array` unless you set them here.
        srun_options: options for `srun`, with the same rules; only used with `use_srun=True`.
        srun_append: a command placed between `srun` and the Python call, e.g. a profiler
            (`"nsys profile --stats=true"`); only used with `use_srun=True`.
        setup: shell lines run first, e.g. `["module load python/3.11"]`.
        prerun_commands: shell lines run after the environment is set up, just before the function.
        postrun_commands: shell lines run after the function returns.
        use_srun: run the function with `srun` so that every task of the job runs it (for MPI or
            multi-GPU work). The result is rank 0's return value, or the first failing rank's exception.
        variables: environment variables to export, e.g. `{"OMP_NUM_THREADS": 8}`. Names must be valid
            shell names; values are quoted, so they arrive exactly as given (`True`/`False` as
            `1`/`0`).
        conda_env: a conda environment to activate (a name or a path). If activation fails, the job stops
            with exit code 99 and says why on its standard error.
        python: the Python interpreter on the cluster, e.g. `"/opt/conda/bin/python3"`; overrides the
            session's. It needs the same minor version as your local Python, and cloudpickle.
        job_name: the Slurm job name; by default the session picks one that ends with the job's token.
        array_parallelism: how many tasks of a job array may run at once (`--array=...%N`); `None`
            for no limit.
        coalesce: allow the session to put calls with this spec that are submitted together into one
            job array. Set False to always submit one job per call.
        retries: how many times a job that ended with one of `retry_on` is submitted again (a new
            job id, the same future; `JobFuture.attempts` lists the ids tried). `0`: never.
            Cancelling the future stops its retries. A future of `SlurmSession.reattach` is not
            retried any further: the journal does not keep the spec, so its current attempt is its last.
        retry_on: the outcomes that are retried, as exception classes: by default
            `(JobNodeFailure, JobPreempted)`. An exception raised by your function is retried only if
            its class (or a base of it) is named here.
        requeue: let Slurm requeue the job (`--requeue`) and send the batch script
            `requeue_signal` `signal_lead` seconds before its time limit, and on preemption
            where the cluster sends it (`--signal=B:USR2@60`). If the function has a `checkpoint`
            method (see [`Checkpointable`][slurmbatch.Checkpointable]), the signal makes the job save the call it
            returns and requeue itself, and the requeued job resumes with that call; the future stays
            pending across requeues. Without one, a preempted job starts again from scratch and a job
            that reaches its time limit fails with [`JobTimeout`][slurmbatch.JobTimeout].
        requeue_signal: the signal name for `requeue`; `USR2` by default (not `USR1`, which
            NCCL and other libraries use for their own purposes).
        signal_lead: seconds before the time limit at which `requeue_signal` is sent (Slurm may
            send it up to a minute earlier); it is the time a checkpoint may take.
    """

    options: Mapping[str, OptionValue] = attrs.field(
        factory=FrozenMapping, converter=_freeze_options, validator=_check_options
    )
    srun_options: Mapping[str, OptionValue] = attrs.field(
        factory=FrozenMapping, converter=_freeze_options, validator=_check_options
    )
    srun_append: str = attrs.field(default="", validator=_check_text)
    setup: Sequence[str] = attrs.field(default=(), converter=_to_tuple, validator=_check_lines)
    prerun_commands: Sequence[str] = attrs.field(default=(), converter=_to_tuple, validator=_check_lines)
    postrun_commands: Sequence[str] = attrs.field(default=(), converter=_to_tuple, validator=_check_lines)
    use_srun: bool = attrs.field(default=False, validator=_check_flag)
    variables: Mapping[str, VariableValue] = attrs.field(
        factory=FrozenMapping, converter=_freeze_variables, validator=_check_variables
    )
    conda_env: str | None = attrs.field(default=None, validator=_check_optional_name)
    python: str | None = attrs.field(default=None, validator=_check_python)
    job_name: str | None = attrs.field(default=None, validator=_check_optional_name)
    array_parallelism: int | None = attrs.field(default=None, validator=_check_parallelism)
    coalesce: bool = attrs.field(default=True, validator=_check_flag)
    retries: int = attrs.field(default=0, validator=_check_retries)
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        factory=_default_retry_on, converter=_to_types, validator=_check_retry_on
    )
    requeue: bool = attrs.field(default=False, validator=_check_flag)
    requeue_signal: str = attrs.field(default="USR2", validator=_check_signal)
    signal_lead: int = attrs.field(default=60, validator=_check_lead)

    def __attrs_post_init__(self) -> None:
        if not self.use_srun and (self.srun_options or self.srun_append):
            given = "srun_options" if self.srun_options else "srun_append"
            raise ValueError(
                f"JobSpec.{given} is set but use_srun is False, so it would be ignored. "
                f"Set use_srun=True, or leave {given} out."
            )
