"""The results of trainings as data: each run's settings, its epochs and where its trained model is.

One reader for everything that takes results out of convlab (``export``, ``compare``, ``tensorboard``,
the notebook API): a few ``select``s in the caller's session, returned as frozen values that outlive it.
A run that reused an earlier identical run (cached) shows that run's epochs and model, and says which.
Nothing here imports Keras: :func:`model_path` reads the checkpoint's state file, a small JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.records import EpochRecord
from orchestrator.errors import UserError
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.errors import ArtifactError
from storage.models import EpochMetric, Run, RunKind, RunStatus, Sweep


@dataclass(frozen=True)
class TrainingResult:
    """One training of a sweep. ``spec`` is the stored spec: exactly the values the run's identity holds."""

    run_id: str
    sweep_id: str | None
    label: str
    status: RunStatus
    seed: int
    spec: Mapping[str, Any]
    source_id: str  # the run whose epochs and model these are: itself, or the run it reused
    total_epochs: int
    epochs: tuple[EpochRecord, ...]
    recorded_at: tuple[datetime | None, ...]  # when each epoch was written (its row's time)
    checkpoint: str | None  # the source's committed checkpoint state file, relative to the artifacts root
    created_at: datetime | None

    @property
    def reused(self) -> bool:
        return self.source_id != self.run_id

    @property
    def final_val_accuracy(self) -> float | None:
        values = [e.val_accuracy for e in self.epochs if e.val_accuracy is not None]
        return values[-1] if values else None

    @property
    def best(self) -> EpochRecord | None:
        """The epoch with the highest validation accuracy (the first such epoch on a tie)."""
        scored = [e for e in self.epochs if e.val_accuracy is not None]
        return max(scored, key=lambda e: e.val_accuracy or 0.0) if scored else None

    def history(self) -> list[dict[str, Any]]:
        """The epochs as plain dicts, in order (``EpochRecord`` field names)."""
        return [e.to_dict() for e in self.epochs]


@dataclass(frozen=True)
class SweepResults:
    id: str
    plan: str
    profile: str
    overrides: Mapping[str, Any]
    code_version: str
    created_at: datetime | None
    trainings: tuple[TrainingResult, ...]


def _latest(s: Session) -> Sweep:
    sweep = repo.latest_sweep(s)
    if sweep is None:
        raise UserError("no sweep yet: start one with `orchestrator submit all`")
    return sweep


def load_sweep(s: Session, sweep_id: str | None = None) -> SweepResults:
    """Sweep ``sweep_id`` (default: the latest) with every training; an unknown id raises ``NotFound``."""
    sweep = repo.get_sweep(s, sweep_id) if sweep_id else _latest(s)
    runs = list(
        s.scalars(
            select(Run)
            .where(Run.sweep_id == sweep.id, Run.kind == RunKind.TRAIN)
            .order_by(Run.created_at, Run.id)
        )
    )
    return _results(s, sweep, runs)


def load_sweeps(s: Session, sweep_ids: Sequence[str] = ()) -> list[SweepResults]:
    """The sweeps named (each checked), or every sweep, oldest first, when none is."""
    if sweep_ids:
        return [load_sweep(s, repo.get_sweep(s, i).id) for i in sweep_ids]
    ids = s.scalars(select(Sweep.id).order_by(Sweep.created_at, Sweep.id))
    return [load_sweep(s, i) for i in ids]


def load_target(s: Session, target: str | None) -> SweepResults:
    """A sweep (``s-…``, default: the latest), or one training (``r-…``) within its sweep."""
    if not target or not target.startswith("r-"):
        return load_sweep(s, target)
    run = repo.get_run(s, target)
    if run.kind != RunKind.TRAIN:
        raise UserError(f"{target}: a {run.kind} run has no epochs; give a training or a sweep")
    return _results(s, repo.get_sweep(s, run.sweep_id) if run.sweep_id else None, [run])


def _results(s: Session, sweep: Sweep | None, runs: list[Run]) -> SweepResults:
    """``sweep`` None: runs outside any sweep (submitted before sweeps existed, or by a test)."""
    sources = _sources(s, runs)
    ids = {sources[r.id].id for r in runs}
    rows: dict[str, list[EpochMetric]] = {}
    for m in s.scalars(select(EpochMetric).where(EpochMetric.run_id.in_(ids)).order_by(EpochMetric.epoch)):
        rows.setdefault(m.run_id, []).append(m)
    trainings = []
    for run in runs:
        source = sources[run.id]
        epochs = rows.get(source.id, [])
        trainings.append(
            TrainingResult(
                run_id=run.id,
                sweep_id=run.sweep_id,
                label=run.label or str(run.spec.get("regime", "")),
                status=RunStatus(run.status),
                seed=run.seed,
                spec=MappingProxyType(dict(run.spec or {})),
                source_id=source.id,
                total_epochs=run.total_epochs or source.total_epochs,
                epochs=tuple(EpochRecord.of(m) for m in epochs),
                recorded_at=tuple(m.recorded_at for m in epochs),
                checkpoint=source.checkpoint,
                created_at=run.created_at,
            )
        )
    return SweepResults(
        id=sweep.id if sweep else "",
        plan=sweep.plan if sweep else "",
        profile=sweep.profile if sweep else "",
        overrides=MappingProxyType(dict(sweep.overrides or {}) if sweep else {}),
        code_version=sweep.code_version if sweep else "",
        created_at=sweep.created_at if sweep else None,
        trainings=tuple(trainings),
    )


def _sources(s: Session, runs: Iterable[Run]) -> dict[str, Run]:
    """run id -> the run whose results count for it (one query for every reused run)."""
    runs = list(runs)
    wanted = {r.reused_run_id for r in runs if r.reused_run_id}
    found = {r.id: r for r in s.scalars(select(Run).where(Run.id.in_(wanted)))} if wanted else {}
    return {r.id: found.get(r.reused_run_id or "", r) for r in runs}


def model_path(store: ArtifactStore, checkpoint: str | None, recorded: Mapping[str, str]) -> Path | None:
    """A verified local copy of the trained model (a ``.keras`` file ``keras.saving.load_model`` reads)
    that a checkpoint state file names, or None when there is none (not trained yet, or its files are
    gone or damaged). ``recorded``: path -> sha256 of the run's artifacts, as the database has them."""
    if not checkpoint or checkpoint not in recorded:
        return None
    try:
        model_file = str(json.loads(store.read_bytes(checkpoint, recorded[checkpoint]))["model_file"])
        model_rel = f"{checkpoint.rsplit('/', 1)[0]}/{model_file}"
        return store.local_copy(model_rel, recorded[model_rel]) if model_rel in recorded else None
    except (ArtifactError, ValueError, KeyError, TypeError):
        return None
