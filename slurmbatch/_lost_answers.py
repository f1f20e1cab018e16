"""Finding jobs whose sbatch answer was lost, by the token each job carries in its ``--comment``."""

from __future__ import annotations

import logging
from collections.abc import Set

import anyio

from ._errors import ConnectionLost
from .slurm.batch import lookup_command, parse_lookup
from .transport import Transport

logger = logging.getLogger("slurmbatch")

__all__ = ["look_up_tokens"]

# Seconds before each look: slurmctld may still be working through the request when sbatch gives up
# waiting for its answer, so a job not seen at once may appear a little later.
_PAUSES = (0.0, 1.0, 2.0, 4.0, 8.0)


async def look_up_tokens(pool: Transport, slurm_setup: str, tokens: Set[str]) -> tuple[dict[str, str], bool]:
    """The job ids of ``tokens`` that squeue knows, and whether squeue could be asked at all.

    Looks a few times, over about 15 s, until every token is found.
    """
    found: dict[str, str] = {}
    looked = False
    for pause in _PAUSES:
        await anyio.sleep(pause)
        try:
            result = await pool.script(
                slurm_setup + lookup_command(), what="looking submitted jobs up by their tokens"
            )
        except ConnectionLost as exc:
            logger.info("could not look jobs up: %s", exc)
            continue
        if not result.ok:
            logger.info("could not look jobs up: %s", result.stderr.strip())
            continue
        looked = True
        found.update(parse_lookup(result.stdout, tokens - set(found)))
        if len(found) == len(tokens):
            break
    return found, looked
