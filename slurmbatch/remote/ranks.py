"""The ranks of a multi-task (``srun``) job: one outcome file per rank, gathered into the job's result.

Every task of the step runs the function and writes ``rank-<SLURM_PROCID>.pkl`` into the directory of
the job's current attempt, ``RANK_DIR/attempt-<SLURM_RESTART_COUNT>`` (0 before any requeue), so that
the files of an earlier attempt never stand for a rank of this one. ``gather`` then picks the outcome
that stands for the whole job (the first failing rank, else rank 0) and writes the result file, so that
file is written exactly once.
"""

from __future__ import annotations

import os

from .failures import UsageError, describe
from .files import sync_standard_streams, write_atomically
from .outcome import OUTCOME_PROTOCOL, outcome

try:
    import _pickle as pickle  # see outcome.py: the C pickler without pickle.py's imports
except ImportError:
    import pickle  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def attempt_dir(rank_dir: str) -> str:
    """The directory of this attempt's rank outcomes in ``rank_dir``."""
    # Slurm counts a job's requeues in SLURM_RESTART_COUNT, unset before the first one.
    restarts = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    return os.path.join(rank_dir, f"attempt-{restarts if restarts.isdigit() else 0}")


def write_rank_outcome(rank_dir: str, rank: int, result: dict[str, Any]) -> None:
    """Write rank ``rank``'s outcome ``result`` into this attempt's directory in ``rank_dir``."""
    # gather learns how many ranks to expect from the step itself, whatever srun options made it.
    result["ntasks"] = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
    directory = attempt_dir(rank_dir)
    # Ranks may start on several nodes at once; whoever comes first creates the directories.
    os.makedirs(rank_dir, mode=0o700, exist_ok=True)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    sync_standard_streams()
    write_atomically(
        os.path.join(directory, f"rank-{rank}.pkl"), pickle.dumps(result, protocol=OUTCOME_PROTOCOL)
    )


def gather(result_path: str, rank_dir: str, ntasks: int) -> int:
    """Merge this attempt's per-rank outcomes into ``result_path``; return 0 if all ranks returned.

    ``ntasks`` 0 means: as many ranks as the step had, as recorded by the ranks themselves.
    """
    if ntasks < 0:
        raise UsageError(f"--ntasks must be 0 (as recorded by the ranks) or more, not {ntasks}.")
    directory = attempt_dir(rank_dir)
    if ntasks == 0:
        ntasks = _recorded_ntasks(directory)
    outcomes: list[dict[str, Any]] = []
    missing: list[int] = []
    for rank in range(ntasks):
        path = os.path.join(directory, f"rank-{rank}.pkl")
        try:
            with open(path, "rb") as file:
                found = pickle.load(file)
            if not isinstance(found, dict) or "kind" not in found:
                raise ValueError("it does not hold an outcome")
        except FileNotFoundError:
            missing.append(rank)
            continue
        except Exception as exc:
            message = f"Rank {rank} left a damaged outcome file {path}: {describe(exc)}."
            found = outcome(rank, None, kind="exception", exc_type="RuntimeError", message=message)
        outcomes.append(found)
    failed = [found for found in outcomes if found["kind"] != "value"]
    if failed:
        chosen = failed[0]
    elif missing:
        ranks = ", ".join(str(rank) for rank in missing)
        message = (
            f"Rank(s) {ranks} of {ntasks} wrote no outcome to {directory}: they ended before the function "
            "returned or raised (killed, crashed, or never started). The job's stderr may say why."
        )
        chosen = outcome(missing[0], None, kind="exception", exc_type="RuntimeError", message=message)
    else:
        chosen = outcomes[0]
    sync_standard_streams()
    write_atomically(result_path, pickle.dumps(chosen, protocol=OUTCOME_PROTOCOL))
    return 0 if chosen["kind"] == "value" else 1


def _recorded_ntasks(directory: str) -> int:
    """The step's task count as the ranks recorded it (at least 1, so that a silent step is reported)."""
    recorded = 1
    try:
        names = os.listdir(directory)
    except OSError:
        return recorded
    for name in names:
        if name.startswith("rank-") and name.endswith(".pkl"):
            try:
                with open(os.path.join(directory, name), "rb") as file:
                    recorded = max(recorded, int(pickle.load(file).get("ntasks", 1)))
            except Exception:
                continue
    return recorded
