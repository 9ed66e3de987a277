"""Per-epoch metrics: written by the attempt holding the run (fenced), read for status and reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from storage.models import (
    EpochMetric,
    Run,
    utcnow,
)
from storage.repository._base import _fenced, _insert


def record_epoch(
    s: Session,
    run_id: str,
    *,
    fence: int,
    epoch: int,
    phase: str,
    loss: float,
    accuracy: float,
    val_loss: float | None,
    val_accuracy: float | None,
    lr: float,
    seconds: float,
    images_per_second: float,
    checkpoint: str | None = None,
) -> None:
    """Insert or overwrite the metrics of one epoch, advance ``run.last_epoch`` (never backwards),
    refresh the heartbeat and, with ``checkpoint``, commit the checkpoint state file the epoch ended in.

    Refused with :class:`LeaseLost` unless attempt ``fence`` holds the run: a paused attempt that lost
    its run cannot overwrite the winner's epochs or point the run at its own checkpoint.
    """
    values: dict[str, Any] = {"last_epoch": case((Run.last_epoch < epoch, epoch), else_=Run.last_epoch)}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    _fenced(s, run_id, fence, **values)
    row = {
        "phase": phase,
        "loss": float(loss),
        "accuracy": float(accuracy),
        "val_loss": None if val_loss is None else float(val_loss),
        "val_accuracy": None if val_accuracy is None else float(val_accuracy),
        "lr": float(lr),
        "seconds": float(seconds),
        "images_per_second": float(images_per_second),
        "recorded_at": utcnow(),
    }
    stmt = _insert(s, EpochMetric).values(run_id=run_id, epoch=int(epoch), **row)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "epoch"], set_=row)
    s.execute(stmt)


def metric_history(s: Session, run_id: str) -> list[EpochMetric]:
    return list(
        s.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch))
    )
