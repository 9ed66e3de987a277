"""Per-epoch metrics: written by the attempt holding the run (fenced), read for status and reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from contract.records import EpochRecord
from storage.models import (
    EpochMetric,
    Run,
    utcnow,
)
from storage.repository._base import _fenced, _insert


def record_epoch(
    s: Session, run_id: str, record: EpochRecord, *, fence: int, checkpoint: str | None = None
) -> None:
    """Insert or overwrite the metrics of one epoch, advance ``run.last_epoch`` (never backwards),
    refresh the heartbeat and, with ``checkpoint``, commit the checkpoint state file the epoch ended in.

    Refused with :class:`LeaseLost` unless attempt ``fence`` holds the run: a paused attempt that lost
    its run cannot overwrite the winner's epochs or point the run at its own checkpoint.
    """
    epoch = int(record.epoch)
    values: dict[str, Any] = {"last_epoch": case((Run.last_epoch < epoch, epoch), else_=Run.last_epoch)}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    _fenced(s, run_id, fence, **values)
    # Plain Python numbers whatever the engine handed over (numpy scalars do not bind everywhere).
    row: dict[str, Any] = {
        k: (v if v is None or isinstance(v, str) else float(v)) for k, v in record.to_dict().items()
    }
    del row["epoch"]
    row["recorded_at"] = utcnow()
    stmt = _insert(s, EpochMetric).values(run_id=run_id, epoch=epoch, **row)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "epoch"], set_=row)
    s.execute(stmt)


def epoch_history(s: Session, run_id: str) -> list[EpochRecord]:
    """The run's epochs, in order, as the records they were written from."""
    return [EpochRecord.of(m) for m in metric_history(s, run_id)]


def metric_history(s: Session, run_id: str) -> list[EpochMetric]:
    return list(
        s.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch))
    )
