"""What status tables show: a run with its latest epoch, two queries for a whole sweep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from storage.models import (
    EpochMetric,
    Run,
    RunKind,
    RunStatus,
)
from storage.repository.runs import get_run


@dataclass(frozen=True)
class RunSummary:
    """One row of a status table: the run plus its latest epoch's metrics."""

    id: str
    kind: RunKind
    label: str
    status: RunStatus
    attempts: int
    max_attempts: int
    total_epochs: int
    last_epoch: int
    worker: str | None
    device: str | None
    reused_run_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    error: str | None
    spec: dict[str, Any]
    seed: int
    sweep_id: str | None = None
    progress: dict[str, Any] | None = None

    @property
    def results_run_id(self) -> str:
        """The run whose results count for this one (see :attr:`Run.results_run_id`)."""
        return self.reused_run_id or self.id

    traceback: str | None = None
    val_accuracy: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    val_loss: float | None = None
    seconds_per_epoch: float | None = None
    images_per_second: float | None = None
    fence: int = 0  # how many times the run was claimed (never refunded, unlike ``attempts``)


def sweep_runs(s: Session, sweep_id: str) -> list[RunSummary]:
    """Every run of a sweep with its latest metrics, in creation order: two queries, whatever the size."""
    runs = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.created_at, Run.id)))
    return _summaries(s, runs)


def run_summary(s: Session, run_id: str) -> RunSummary:
    """One run as :func:`sweep_runs` describes it (``NotFound`` if there is none)."""
    return _summaries(s, [get_run(s, run_id)])[0]


def _summaries(s: Session, runs: list[Run]) -> list[RunSummary]:
    if not runs:
        return []
    ids = [run.id for run in runs]
    per_run = (
        select(
            EpochMetric.run_id.label("run_id"),
            func.max(EpochMetric.epoch).label("epoch"),
            func.avg(EpochMetric.seconds).label("mean_seconds"),
        )
        .where(EpochMetric.run_id.in_(ids))
        .group_by(EpochMetric.run_id)
        .subquery()
    )
    latest = select(EpochMetric, per_run.c.mean_seconds).join(
        per_run, and_(EpochMetric.run_id == per_run.c.run_id, EpochMetric.epoch == per_run.c.epoch)
    )
    metrics: dict[str, tuple[EpochMetric, float]] = {m.run_id: (m, mean) for m, mean in s.execute(latest)}
    out = []
    for run in runs:
        found = metrics.get(run.id)
        extra: dict[str, Any] = {}
        if found is not None:
            m, mean = found
            extra = {
                "val_accuracy": m.val_accuracy,
                "accuracy": m.accuracy,
                "loss": m.loss,
                "val_loss": m.val_loss,
                "seconds_per_epoch": None if mean is None else float(mean),
                "images_per_second": m.images_per_second,
            }
        out.append(
            RunSummary(
                id=run.id,
                kind=run.kind,
                label=run.label,
                status=run.status,
                attempts=run.attempts,
                max_attempts=run.max_attempts,
                total_epochs=run.total_epochs,
                last_epoch=run.last_epoch,
                worker=run.worker,
                device=run.device,
                reused_run_id=run.reused_run_id,
                cancel_requested=run.cancel_requested,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
                heartbeat_at=run.heartbeat_at,
                error=run.error,
                spec=run.spec,
                seed=run.seed,
                sweep_id=run.sweep_id,
                traceback=run.traceback,
                progress=run.progress,
                fence=run.fence,
                **extra,
            )
        )
    return out
