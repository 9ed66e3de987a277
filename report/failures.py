"""Runs that failed or were cancelled, each distinct error once with how many runs it ended.

A sweep where everything failed for one reason (missing weights, say) would otherwise repeat the same
message under every figure and in every table row: figures and tables point here instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from report.data import ReportData, RunInfo

NO_MESSAGE = "no error message recorded"
ENDED_BADLY = ("failed", "cancelled")


@dataclass(frozen=True)
class Failure:
    number: int  # 1-based, in order of first appearance
    status: str  # "failed" or "cancelled"
    message: str
    runs: tuple[RunInfo, ...]

    @property
    def count(self) -> int:
        return len(self.runs)

    def run_list(self) -> str:
        return ", ".join(f"{r.id} ({r.kind} {r.label})" for r in self.runs)


def failures(data: ReportData) -> tuple[Failure, ...]:
    grouped: dict[tuple[str, str], list[RunInfo]] = {}
    for run in (*data.all_runs, *data.other_runs):
        if run.status in ENDED_BADLY:
            grouped.setdefault((run.status, run.error or NO_MESSAGE), []).append(run)
    return tuple(
        Failure(number=i, status=status, message=message, runs=tuple(runs))
        for i, ((status, message), runs) in enumerate(grouped.items(), start=1)
    )


def failure_of(all_failures: tuple[Failure, ...], run_id: str) -> Failure | None:
    return next((f for f in all_failures if any(r.id == run_id for r in f.runs)), None)


def reference(all_failures: tuple[Failure, ...], run: RunInfo) -> str:
    """ "run r-… failed (error 1 under Failures)" for a run that ended badly, else its status."""
    found = failure_of(all_failures, run.id)
    if found is None:
        return f"run {run.id} is {run.status}"
    return f"run {run.id} {found.status} (error {found.number} under Failures)"
