"""The fault suite's table: one row per injected fault, printed at the end of the test run."""

from __future__ import annotations

import attrs

ROWS: list[FaultRow] = []


@attrs.frozen
class FaultRow:
    """What one fault cost: jobs submitted and answered, duplicates, jobs left behind, recovery time."""

    fault: str
    backend: str
    submitted: int
    results: int
    duplicates: int
    orphaned: int
    recovery_seconds: float

    def markdown(self) -> str:
        return (
            f"| {self.fault} | {self.backend} | {self.submitted} | {self.results} | {self.duplicates} "
            f"| {self.orphaned} | {self.recovery_seconds:.1f} |"
        )


def table() -> str:
    """The rows recorded so far, as a markdown table."""
    head = (
        "| fault | backend | jobs submitted | results received | duplicates | orphaned jobs | recovery (s) |\n"
        "|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(row.markdown() for row in ROWS)])
