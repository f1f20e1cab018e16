"""Which submit requests of a batch become one sbatch call (a job array), and on what each call waits.

Calls that share a function and a JobSpec become one array job, when they also wait for the same
jobs: Slurm's ``--dependency`` is the array's, not a task's. One exception keeps the arrays of a map
over another map's futures: when call ``i`` takes exactly the value of task ``i`` of one array job, the
calls become one array with ``--dependency=aftercorr:<that array>`` (task ``i`` starts once task ``i``
succeeded). Other calls with distinct dependencies become single jobs with ``afterok`` on their own
upstream jobs. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ._dependencies import dependency_option
from ._submit_requests import ArrayShape, Job, SubmitRequest
from .spec import JobSpec

__all__ = ["array_task", "group_jobs"]


def array_task(job_id: str) -> tuple[str, int] | None:
    """``("123", 4)`` for the array task id ``"123_4"`` (cluster suffix dropped), else None."""
    head, _, index = job_id.split(";", 1)[0].partition("_")
    return (head, int(index)) if index.isdigit() else None


def group_jobs(
    batch: Sequence[SubmitRequest], *, max_array_size: int, new_token: Callable[[], str]
) -> Iterator[Job]:
    """The sbatch calls that submit ``batch`` (see the module docstring)."""
    groups: dict[tuple[str, JobSpec, str | None], list[SubmitRequest]] = {}
    corresponding: dict[tuple[str, JobSpec, str], dict[int, SubmitRequest]] = {}
    for request in batch:
        dependency = dependency_option(u.job_id for u in request.upstream)
        if request.future is not None:  # a retry: a job of its own, under its future's token
            yield Job(request.token, [request], None, dependency)
            continue
        if not request.spec.coalesce:
            yield Job(new_token(), [request], None, dependency)
            continue
        task = array_task(request.upstream[0].job_id) if len(request.upstream) == 1 else None
        if task is not None:
            tasks = corresponding.setdefault((request.function.digest, request.spec, task[0]), {})
            if task[1] not in tasks:
                tasks[task[1]] = request
                continue
        groups.setdefault((request.function.digest, request.spec, dependency), []).append(request)
    for (digest, spec, array_id), tasks in corresponding.items():
        if len(tasks) > 1 and sorted(tasks) == list(range(len(tasks))) and len(tasks) <= max_array_size:
            yield Job(
                new_token(),
                [tasks[i] for i in range(len(tasks))],
                ArrayShape(len(tasks)),
                f"aftercorr:{array_id}",
            )
        else:  # not task i after task i: each waits for its own upstream task
            for request in tasks.values():
                key = (digest, spec, dependency_option(u.job_id for u in request.upstream))
                groups.setdefault(key, []).append(request)
    for (_, _, dependency), requests in groups.items():
        for start in range(0, len(requests), max_array_size):
            chunk = requests[start : start + max_array_size]
            array = ArrayShape(len(chunk)) if len(chunk) > 1 else None
            yield Job(new_token(), chunk, array, dependency)
