"""How much each mode measures. Quick fits in 5 minutes on 2 cores (venvs already made); full is the
documented long run. Contenders that are slow by design get fewer jobs; the table names every N."""

from __future__ import annotations

import attrs


@attrs.frozen
class Mode:
    name: str
    p1_jobs: int  # P1: jobs per run for the fast contenders
    p1_slow_jobs: int  # P1: jobs per run for one connection or one throttled sbatch per job
    p2_items: int  # P2: map items
    p3_samples: int  # P3: latency samples per run
    p4_jobs: int  # P4: jobs run to completion
    p4_plugin_jobs: int  # P4 for covalent-slurm-plugin: one SSH connection held per job
    timeout: float  # seconds one driver run may take before it counts as failed
    futures: int = 0  # memory: held map items whose futures are traced (0: not measured)
    repeats: dict[str, int] = attrs.field(factory=dict)  # runs per contender and measure

    def runs(self, measure: str) -> int:
        return self.repeats.get(measure, 1)


QUICK = Mode(
    name="quick",
    p1_jobs=500,
    p1_slow_jobs=30,
    p2_items=10_000,
    p3_samples=2,
    p4_jobs=200,
    p4_plugin_jobs=10,
    timeout=300,
    repeats={"p1": 2, "p2": 2, "p3": 2, "p4": 1},
)
FULL = Mode(
    name="full",
    p1_jobs=2000,
    p1_slow_jobs=200,
    p2_items=10_000,
    p3_samples=5,
    p4_jobs=1000,
    p4_plugin_jobs=50,
    timeout=1200,
    repeats={"p1": 5, "p2": 3, "p3": 3, "p4": 2},
)
