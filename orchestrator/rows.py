"""Status of runs as data: one row per run (for the table and the JSON records) and a run's detail.

Read from the database only; how it is drawn is :mod:`orchestrator.monitor`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import repository as repo
from storage.db import Database
from storage.models import TERMINAL_STATUSES, ArtifactKind, RunKind, RunStatus

# What status tables call a run satisfied by an earlier identical run instead of being executed (stored
# as succeeded, with ``reused_run_id``): shown apart, so that a user sees what ran now and what did not.
CACHED = "cached"


def shown_worker(name: str | None) -> str | None:
    """A worker's name as its user gave it: Celery names a node ``celery@NAME`` when ``--name`` has no
    ``@`` (``orchestrator worker``'s own names always have one, so nothing else is stripped)."""
    return name.removeprefix("celery@") if name else name


@dataclass(frozen=True)
class RunRow:
    id: str
    kind: str
    label: str
    status: str  # a RunStatus member, or CACHED for a run satisfied by an earlier identical one
    epoch: int
    epochs: int
    val_accuracy: float | None
    eta_seconds: float | None
    worker: str | None
    device: str | None
    attempts: int
    error: str | None
    reused_run_id: str | None
    # How far into the epoch under way a running training is (0-1), and its images/s so far in it.
    epoch_fraction: float | None = None
    live_images_per_second: float | None = None
    # How many times the run started (was claimed), counting those a graceful hand-back refunded from
    # ``attempts`` (Ctrl-C, SIGTERM): a training that ran five epochs and was handed back started once.
    starts: int = 0

    def to_json(self) -> dict[str, Any]:
        record = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "val_accuracy": self.val_accuracy,
            "eta_seconds": self.eta_seconds,
            "attempts": self.attempts,
            "starts": self.starts,
            "worker": self.worker,
            "device": self.device,
            "error": self.error,
            "reused_run_id": self.reused_run_id,
            "label": self.label,
        }
        if self.kind == RunKind.TRAIN:
            record["regime"] = self.label
        if self.epoch_fraction is not None:
            record["epoch_fraction"] = round(self.epoch_fraction, 4)
            record["live_images_per_second"] = self.live_images_per_second
        return record


def _row(summary: Any, source: Any) -> RunRow:
    """``source`` is the run whose results count: the run itself, or the earlier run it reuses."""
    status: str = RunStatus(summary.status)
    if summary.reused_run_id:
        # Cached once it is satisfied; until then a joined run shows the status of the run it follows.
        if summary.status == RunStatus.QUEUED:
            status = RunStatus(source.status)
        elif summary.status == RunStatus.SUCCEEDED:
            status = CACHED
    epochs = summary.total_epochs
    epoch = source.last_epoch
    fraction, live_rate = _live_progress(source) if status == RunStatus.RUNNING else (None, None)
    eta = None
    if status == RunStatus.RUNNING and epochs:
        remaining = max(0.0, epochs - epoch - (fraction or 0.0))
        if source.seconds_per_epoch:
            eta = source.seconds_per_epoch * remaining
        elif fraction and live_rate:  # the first epoch: from the rate so far (training part only)
            progress = source.progress or {}
            epoch_seconds = progress["of"] * (source.spec.get("batch_size") or 32) / live_rate
            eta = epoch_seconds * remaining
    return RunRow(
        id=summary.id,
        kind=str(summary.kind),
        label=summary.label,
        status=status,
        epoch=epoch,
        epochs=epochs,
        val_accuracy=source.val_accuracy,
        eta_seconds=eta,
        worker=shown_worker(source.worker),
        device=source.device,
        attempts=summary.attempts,
        error=summary.error,
        reused_run_id=summary.reused_run_id,
        epoch_fraction=fraction,
        live_images_per_second=live_rate,
        starts=summary.fence,
    )


def _live_progress(source: Any) -> tuple[float | None, float | None]:
    """(fraction of the epoch under way, images/s in it) from the progress the heartbeat carries; only
    when it is about the epoch after the last recorded one (older progress is stale)."""
    progress = source.progress or {}
    try:
        if int(progress["epoch"]) != source.last_epoch + 1 or int(progress["of"]) <= 0:
            return None, None
        return min(1.0, int(progress["batches"]) / int(progress["of"])), float(progress["images_per_second"])
    except (KeyError, TypeError, ValueError):
        return None, None


def sweep_rows(db: Database, sweep_id: str) -> list[RunRow]:
    with db.session(readonly=True) as s:
        summaries = repo.sweep_runs(s, sweep_id)
        by_id = {x.id: x for x in summaries}
        rows = []
        for summary in summaries:
            source = by_id.get(summary.results_run_id) or repo.run_summary(s, summary.results_run_id)
            rows.append(_row(summary, source))
        return rows


def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    with db.session(readonly=True) as s:
        summary = repo.run_summary(s, run_id)
        source = (
            summary if summary.results_run_id == summary.id else repo.run_summary(s, summary.results_run_id)
        )
        record = _row(summary, source).to_json()
        record["sweep_id"] = summary.sweep_id
        record["spec"] = summary.spec
        record["seed"] = summary.seed
        record["traceback"] = summary.traceback
        record["history"] = [r.to_dict() for r in repo.epoch_history(s, source.id)]
        # Paths relative to $CONVLAB_HOME/artifacts; the files whose results the run stands on.
        artifacts = repo.artifacts_of(s, source.id)
        record["artifacts"] = [
            {"path": a.path, "kind": str(a.kind), "sha256": a.sha256, "bytes": a.bytes} for a in artifacts
        ]
        # The trained model (``keras.saving.load_model`` opens it): the checkpoint the run stands on.
        models = [
            a.path for a in artifacts if a.kind == ArtifactKind.CHECKPOINT and a.path.endswith(".keras")
        ]
        record["model"] = models[-1] if models else None
        return record


def all_finished(rows: list[RunRow]) -> bool:
    return all(r.status == CACHED or r.status in TERMINAL_STATUSES for r in rows)


def sweep_setup(db: Database, sweep_id: str) -> tuple[str | None, dict[str, str]]:
    """The sweep's profile and its ``--set`` overrides (as given)."""
    with db.session(readonly=True) as s:
        sweep = repo.get_sweep(s, sweep_id)
        return sweep.profile, dict(sweep.overrides or {})
