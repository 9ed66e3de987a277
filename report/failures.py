"""Runs that did not succeed, said apart: failures (each distinct error once, with how many runs it ended)
and cancellations (asked for, each with how far it got and how to resume).

A sweep where everything failed for one reason (missing weights, say) would otherwise repeat the same
message under every figure and in every table row: figures and tables point here instead. A cancelled run
is not an error: it stopped because someone asked, keeps what it reached, and ``retry`` resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from report.data import ReportData, RunInfo
from storage.models import RunKind, RunStatus

NO_MESSAGE = "no error message recorded"


@dataclass(frozen=True)
class Failure:
    number: int  # 1-based, in order of first appearance
    status: RunStatus  # always FAILED: cancellations are listed apart (see :func:`cancellations`)
    message: str
    runs: tuple[RunInfo, ...]

    @property
    def count(self) -> int:
        return len(self.runs)

    def run_list(self) -> str:
        return ", ".join(f"{r.id} ({r.kind} {r.label})" for r in self.runs)


def failures(data: ReportData) -> tuple[Failure, ...]:
    grouped: dict[str, list[RunInfo]] = {}
    for run in (*data.all_runs, *data.other_runs):
        if run.status == RunStatus.FAILED:
            grouped.setdefault(run.error or NO_MESSAGE, []).append(run)
    return tuple(
        Failure(number=i, status=RunStatus.FAILED, message=message, runs=tuple(runs))
        for i, (message, runs) in enumerate(grouped.items(), start=1)
    )


def reached(run: RunInfo) -> str:
    """How far a run got: ``after epoch 2 of 8`` for a training, else whether it had started."""
    if run.kind == RunKind.TRAIN and run.total_epochs:
        if run.last_epoch == 0:
            return f"before its first epoch (of {run.total_epochs})"
        return f"after epoch {run.last_epoch} of {run.total_epochs}"
    return "after it had started" if run.started_at else "before it started"


def cancellations(data: ReportData) -> tuple[RunInfo, ...]:
    """The sweep's cancelled runs, in the order of the sweep."""
    return tuple(r for r in (*data.all_runs, *data.other_runs) if r.status == RunStatus.CANCELLED)


def cancellation_line(run: RunInfo) -> str:
    """``r-… (train imagenet) cancelled after epoch 2 of 8 (cancelled by request)``."""
    why = f" ({run.error})" if run.error else ""
    return f"{run.id} ({run.kind} {run.label}) cancelled {reached(run)}{why}"


def failure_of(all_failures: tuple[Failure, ...], run_id: str) -> Failure | None:
    return next((f for f in all_failures if any(r.id == run_id for r in f.runs)), None)


def reference(all_failures: tuple[Failure, ...], run: RunInfo) -> str:
    """ "run r-… failed (error 1 under Failures)", "run r-… was cancelled after epoch 2 of 8 (under
    Cancelled)", else the run's status."""
    found = failure_of(all_failures, run.id)
    if found is not None:
        return f"run {run.id} failed (error {found.number} under Failures)"
    if run.status == RunStatus.CANCELLED:
        return f"run {run.id} was cancelled {reached(run)} (under Cancelled)"
    return f"run {run.id} is {run.status}"
