"""The uploaded runner compiles its code once and later tasks read it back, never stale or damaged."""

from __future__ import annotations

import marshal
import os
import re
import stat
import sys
from pathlib import Path
from types import CodeType

import cloudpickle
import pytest

from .runner_support import read_outcome, run_runner, write_call


def cache_of(runner_file: Path) -> Path:
    tag = sys.implementation.cache_tag
    return runner_file.parent / f".{runner_file.name}.{tag}-{sys.hexversion:x}.code"


def test_the_first_task_leaves_the_compiled_code_for_the_next(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, lambda: "first")

    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 0, proc.stderr
    cache = cache_of(runner_file)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert sorted(path.name for path in tmp_path.glob(".runner-*")) == [cache.name]  # no temporary file
    assert isinstance(
        marshal.loads(cache.read_bytes()[24:]),
        type(test_the_first_task_leaves_the_compiled_code_for_the_next.__code__),
    )


def test_no_cache_is_written_where_python_writes_no_bytecode(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, lambda: "uncached")

    proc = run_runner(
        runner_file, "run", fn_path, args_path, tmp_path / "res.pkl", env={"PYTHONDONTWRITEBYTECODE": "1"}
    )

    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"]) == "uncached"
    assert list(tmp_path.glob(".runner-*")) == []


def test_later_tasks_run_the_cached_code(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, lambda: "first")
    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")
    cache = cache_of(runner_file)
    # Code of our own in the cache, under the runner's stamp: the next task runs it, not the runner.
    marker = tmp_path / "ran-from-cache"
    code = marshal.dumps(compile(f"open({str(marker)!r}, 'w').close()", "cached", "exec"))
    cache.write_bytes(cache.read_bytes()[:16] + len(code).to_bytes(8, "little") + code)

    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[:-100],  # cut short
        lambda data: data[:24] + b"\xff" * (len(data) - 24),  # not marshal
        lambda data: bytes(8) + data[8:],  # the stamp of another runner file
    ],
)
def test_a_damaged_or_foreign_cache_is_compiled_afresh(
    tmp_path: Path, runner_file: Path, damage: object
) -> None:
    fn_path, args_path = write_call(tmp_path, lambda: "fresh")
    run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")
    cache = cache_of(runner_file)
    good = cache.read_bytes()
    cache.write_bytes(damage(good))

    proc = run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(tmp_path / "res.pkl")["value"]) == "fresh"
    rewritten = cache.read_bytes()  # and written again
    assert rewritten[:16] == good[:16]
    assert isinstance(marshal.loads(rewritten[24:]), CodeType)


def test_a_runner_file_rewritten_in_place_is_not_run_from_the_old_cache(
    tmp_path: Path, runner_file: Path
) -> None:
    fn_path, _ = write_call(tmp_path, lambda x: x * 2)
    (tmp_path / "args-5.pkl").write_bytes(cloudpickle.dumps(((21,), {})))
    run_runner(runner_file, "run", fn_path, tmp_path / "args-5.pkl", tmp_path / "res.pkl")
    # The same name, other code: this one knows the array task placeholder by another name.
    changed = runner_file.read_text().replace(
        'TASK_PLACEHOLDER = "{task}"', 'TASK_PLACEHOLDER = "{array_task}"'
    )
    assert changed != runner_file.read_text()
    runner_file.write_text(changed)

    argv = ("run", fn_path, tmp_path / "args-{array_task}.pkl", tmp_path / "res.{array_task}.pkl")
    proc = run_runner(runner_file, *argv, env={"SLURM_ARRAY_TASK_ID": "5"})

    assert proc.returncode == 0, proc.stderr
    assert cloudpickle.loads(read_outcome(tmp_path / "res.5.pkl")["value"]) == 42


def test_tracebacks_through_the_runner_show_its_own_lines(tmp_path: Path, runner_file: Path) -> None:
    fn_path, args_path = write_call(tmp_path, print)
    fn_path.write_bytes(b"not a pickle")
    lines = runner_file.read_text().splitlines()

    for attempt in ("compiled", "from the cache"):
        run_runner(runner_file, "run", fn_path, args_path, tmp_path / "res.pkl")

        traceback = read_outcome(tmp_path / "res.pkl")["traceback"]
        cited = re.search(
            rf'File "{re.escape(str(runner_file))}", line (\d+), in _unpickle\n(.*)\n', traceback
        )
        assert cited is not None, (attempt, traceback)
        assert "_PayloadUnpickler(io.BytesIO(data), cloudpickle, blobs).load()" in cited.group(2)
        assert lines[int(cited.group(1)) - 1].strip() == cited.group(2).strip()
    assert os.path.exists(cache_of(runner_file))
