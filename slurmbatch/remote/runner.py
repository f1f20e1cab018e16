"""Run one pickled function call on a Slurm compute node and write its outcome to a file.

The batch script runs::

    PYTHON runner.py run FN_PATH ARGS_PATH RESULT_PATH [--expect-python 3.11] [--expect-cloudpickle 3]
                                                       [--rank-dir DIR] [--packed] [--value-file PATH]
                                                       [--resume PATH --checkpoint-signal USR2]
    PYTHON runner.py gather RESULT_PATH --rank-dir DIR --ntasks N

``run`` loads the function (FN_PATH) and its ``(args, kwargs)`` (ARGS_PATH), calls it, and writes the
outcome to RESULT_PATH. With ``--rank-dir`` every task of an ``srun`` step runs the function and writes
its own outcome into DIR instead, and ``gather`` merges them into RESULT_PATH (see ``ranks``). With
``--packed``, ARGS_PATH is the argument table of a job array (see ``table``). With ``--resume``, the
call saved in PATH by an earlier run's checkpoint runs instead of the original, and the signal named by
``--checkpoint-signal`` makes a checkpoint (see ``checkpoint``). A literal ``{task}`` in any path is
replaced by ``$SLURM_ARRAY_TASK_ID``.
With ``--value-file``, a large return value goes to
PATH and the outcome names it (see ``upstream``): jobs it is passed to read it there.

The outcome file (see ``outcome``) is written atomically (temporary file, fsync, rename) with mode
0600, after the job's stdout and stderr are flushed and fsynced (see ``files``). The function's own
output goes to the job's stdout and stderr as usual. Exit status: 0 when the function returned, 1 when
it raised or could not be run, 2 when the command line is wrong.

The session uploads this program as one file built from the modules of ``slurmbatch.remote`` (see
``bundle``; its code is compiled once, see ``compiled``): it uses only the standard library, and
cloudpickle when the payload needs it, and runs on Python 3.8 or newer. A task imports as little as it
can: the runner starts once per task, on every node.
"""

from __future__ import annotations

import os
import sys

from .checkpoint import on_signal
from .environment import LazyCloudpickle, python_problem
from .failures import EnvironmentProblem, LoadError, UsageError, describe, type_name
from .files import sync_standard_streams, write_atomically
from .loading import load_arguments, load_function, load_resume_call
from .outcome import OUTCOME_PROTOCOL, exception_outcome, format_traceback, outcome, pickle_for_client
from .ranks import gather, write_rank_outcome
from .upstream import split_value

try:
    import _pickle as pickle  # see outcome.py: the C pickler without pickle.py's imports
except ImportError:
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TASK_PLACEHOLDER = "{task}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    line = parse_command_line(sys.argv[1:] if argv is None else argv)
    try:
        if line.command == "run":
            return run(
                _with_task(line.fn_path),
                _with_task(line.args_path),
                _with_task(line.result_path),
                expect_python=line.expect_python,
                expect_cloudpickle=line.expect_cloudpickle,
                rank_dir=_with_task(line.rank_dir) if line.rank_dir else None,
                packed=line.packed,
                resume_path=_with_task(line.resume) if line.resume else None,
                checkpoint_signal=line.checkpoint_signal,
                value_file=_with_task(line.value_file) if line.value_file else None,
            )
        return gather(_with_task(line.result_path), _with_task(line.rank_dir or ""), line.ntasks)
    except UsageError as error:
        print(f"slurmbatch runner: {error}", file=sys.stderr)
        return 2


def run(
    fn_path: str,
    args_path: str,
    result_path: str,
    *,
    expect_python: str | None = None,
    expect_cloudpickle: str | None = None,
    rank_dir: str | None = None,
    packed: bool = False,
    resume_path: str | None = None,
    checkpoint_signal: str | None = None,
    value_file: str | None = None,
) -> int:
    """Call the pickled function once and write its outcome; return 0 if it returned, else 1.

    With ``packed``, ``args_path`` is an argument table and the call is its entry ``$SLURM_ARRAY_TASK_ID``.
    With ``rank_dir``, the outcome goes to this rank's file there instead of ``result_path``. With
    ``resume_path``, a call saved there by a checkpoint runs instead, and ``checkpoint_signal`` saves one.
    """
    rank = int(os.environ.get("SLURM_PROCID") or 0)
    cloudpickle = LazyCloudpickle(expect_cloudpickle)
    problem = python_problem(expect_python)
    if problem:
        result = outcome(rank, cloudpickle, kind="environment", message=problem)
    else:
        # Other ranks only report success: rank 0's value stands for the job.
        keep_value = rank_dir is None or rank == 0
        result = _call(
            cloudpickle,
            fn_path,
            args_path,
            rank,
            keep_value=keep_value,
            packed=packed,
            resume_path=resume_path,
            checkpoint_signal=checkpoint_signal,
        )
    if rank_dir:
        write_rank_outcome(rank_dir, rank, result)
    else:
        sync_standard_streams()
        split_value(result, value_file, write_atomically)
        write_atomically(result_path, pickle.dumps(result, protocol=OUTCOME_PROTOCOL))
    return 0 if result["kind"] == "value" else 1


def _call(
    cloudpickle: LazyCloudpickle,
    fn_path: str,
    args_path: str,
    rank: int,
    *,
    keep_value: bool,
    packed: bool,
    resume_path: str | None = None,
    checkpoint_signal: str | None = None,
) -> dict[str, Any]:
    try:
        if resume_path and os.path.exists(resume_path):  # a checkpoint of an earlier run of this job
            fn, args, kwargs = load_resume_call(resume_path, cloudpickle)
        else:
            fn = load_function(fn_path, cloudpickle)
            args, kwargs = load_arguments(args_path, os.path.dirname(fn_path), cloudpickle, packed=packed)
        if resume_path and checkpoint_signal:
            on_signal(checkpoint_signal, fn, args, kwargs, resume_path, cloudpickle)
    except EnvironmentProblem as problem:
        return outcome(rank, cloudpickle, kind="environment", message=str(problem))
    except LoadError as error:
        cause = error.__cause__
        details = format_traceback(cause, cause.__traceback__) if cause is not None else ""
        return outcome(rank, cloudpickle, kind="environment", message=str(error), traceback_text=details)
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        # Skip our own frame: the traceback should start at the user's function.
        return exception_outcome(rank, cloudpickle, exc, skip_frames=1)
    if not keep_value:
        return outcome(rank, cloudpickle, kind="value")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        data = pickle_for_client(value, cloudpickle)
    except EnvironmentProblem as problem:
        plain = f" ({describe(problem.__cause__)})" if problem.__cause__ is not None else ""
        message = (
            f"The return value of {name} (a {type_name(value)} object) cannot be pickled by the standard "
            f"pickler{plain}, and the job cannot use cloudpickle: {problem}"
        )
        return outcome(rank, cloudpickle, kind="environment", message=message)
    except Exception as exc:
        failure = pickle.PicklingError(
            f"The return value of {name} (a {type_name(value)} object) could not be pickled: "
            f"{describe(exc)}. Return plain data (numbers, strings, arrays, dataclasses) instead."
        )
        failure.__cause__ = exc
        return exception_outcome(rank, cloudpickle, failure, skip_frames=0)
    return outcome(rank, cloudpickle, kind="value", value=data)


def _with_task(path: str) -> str:
    if TASK_PLACEHOLDER not in path:
        return path
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not task:
        raise UsageError(f"The path {path} contains {TASK_PLACEHOLDER}, but SLURM_ARRAY_TASK_ID is not set.")
    return path.replace(TASK_PLACEHOLDER, task)


class CommandLine:
    """The runner's parsed command line: ``run`` or ``gather`` and their arguments."""

    def __init__(
        self,
        command: str,
        result_path: str,
        *,
        fn_path: str = "",
        args_path: str = "",
        expect_python: str | None = None,
        expect_cloudpickle: str | None = None,
        rank_dir: str | None = None,
        packed: bool = False,
        ntasks: int = 0,
        resume: str | None = None,
        checkpoint_signal: str | None = None,
        value_file: str | None = None,
    ) -> None:
        self.command = command
        self.result_path = result_path
        self.fn_path = fn_path
        self.args_path = args_path
        self.expect_python = expect_python
        self.expect_cloudpickle = expect_cloudpickle
        self.rank_dir = rank_dir
        self.packed = packed
        self.ntasks = ntasks
        self.resume = resume
        self.checkpoint_signal = checkpoint_signal
        self.value_file = value_file


# What each command takes: its positionals, its options with a value, its flags.
_GRAMMAR = {
    "run": (
        ("fn_path", "args_path", "result_path"),
        (
            "--expect-python",
            "--expect-cloudpickle",
            "--rank-dir",
            "--resume",
            "--checkpoint-signal",
            "--value-file",
        ),
        ("--packed",),
    ),
    "gather": (("result_path",), ("--rank-dir", "--ntasks"), ()),
}


def parse_command_line(argv: list[str]) -> CommandLine:
    """Parse ``argv``; print usage and exit with status 2 if it is not a runner command line."""
    # The batch scripts' own command lines, read without argparse (some milliseconds of every task);
    # argparse reads anything else, to accept what it accepts and to explain what is wrong.
    return _parse_simple(argv) or _parse_with_argparse(argv)


def _parse_simple(argv: list[str]) -> CommandLine | None:
    """The command line ``argv`` if it is in the plain form the session writes, else None."""
    if not argv or argv[0] not in _GRAMMAR:
        return None
    names, with_value, flags = _GRAMMAR[argv[0]]
    positionals: list[str] = []
    options: dict[str, Any] = {}
    words = iter(argv[1:])
    for word in words:
        key, _, inline = word.partition("=")
        if not word.startswith("-") or word == "-":
            positionals.append(word)
        elif key in with_value:
            value = inline if inline or "=" in word else next(words, None)
            if value is None or (value.startswith("-") and not inline):
                return None
            options[key[2:].replace("-", "_")] = value
        elif word in flags:
            options[word[2:]] = True
        else:
            return None
    if len(positionals) != len(names) or (argv[0] == "gather" and "rank_dir" not in options):
        return None
    if "ntasks" in options:
        if not options["ntasks"].isdigit():
            return None
        options["ntasks"] = int(options["ntasks"])
    values: dict[str, Any] = dict(zip(names, positionals))
    return CommandLine(argv[0], values.pop("result_path"), **values, **options)


def _parse_with_argparse(argv: list[str]) -> CommandLine:
    import argparse

    parser = argparse.ArgumentParser(prog="runner.py", description="Run one pickled call of a Slurm job.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_command = commands.add_parser("run", help="call the function and write its outcome")
    run_command.add_argument("fn_path")
    run_command.add_argument("args_path")
    run_command.add_argument("result_path")
    run_command.add_argument("--expect-python", help="the client's Python major.minor, e.g. 3.11")
    run_command.add_argument("--expect-cloudpickle", help="the client's cloudpickle major version, e.g. 3")
    run_command.add_argument("--rank-dir", help="write this rank's outcome there instead of RESULT_PATH")
    run_command.add_argument("--value-file", help="write a large return value there, apart from the outcome")
    run_command.add_argument(
        "--packed", action="store_true", help="ARGS_PATH is an argument table: run entry $SLURM_ARRAY_TASK_ID"
    )
    run_command.add_argument("--resume", help="run the call a checkpoint saved there, if there is one")
    run_command.add_argument("--checkpoint-signal", help="the signal that saves a checkpoint, e.g. USR2")
    gather_command = commands.add_parser("gather", help="merge the per-rank outcomes into RESULT_PATH")
    gather_command.add_argument("result_path")
    gather_command.add_argument("--rank-dir", required=True)
    gather_command.add_argument("--ntasks", type=int, default=0, help="ranks to expect (0: as recorded)")
    return CommandLine(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    # Python puts this file's directory (the remote workdir) first on sys.path; its fn/, jobs/ and
    # results/ directories must not shadow the user's packages of the same name.
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
