"""One immutable snapshot of a sweep, read once: every figure and table of the report draws from it.

Five small ``select``s (sweep, runs, epochs, artifacts, dependencies); nothing else in the report touches
the database. A run with ``reused_run_id`` shows the reused run's metrics and artifacts, and says so in its
provenance. Trainings labelled with a regime are the seed's (Figs. 1-2, results table); other training
labels are the ``explain`` plan's variants ("Beyond the seed").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.records import EpochRecord
from contract.specs import REGIMES, ImageKind, Regime, image_kind
from storage.artifacts import ArtifactStore
from storage.models import Artifact, EpochMetric, Run, RunDependency, RunKind, RunStatus, Sweep

REGIME_ORDER = REGIMES
IMAGE_KINDS = tuple(k.value for k in ImageKind)
RESULT_FILE = "result.json"  # a visualization's mean activations before and after the ascent


class ReportError(ValueError):
    """The report cannot be built; the message says why in one line."""


class UnknownSweepError(ReportError):
    def __init__(self, sweep_id: str) -> None:
        super().__init__(f"no sweep with id {sweep_id!r}")
        self.sweep_id = sweep_id


class NoSweepError(ReportError):
    def __init__(self) -> None:
        super().__init__("there is no sweep in the database yet: nothing to report")


def _text(value: Any) -> str:
    """Kind columns may come back as plain strings or as the str Enums."""
    return str(getattr(value, "value", value))


@dataclass(frozen=True)
class RunInfo:
    """What every run shows in provenance. ``source_id`` is the run whose results are shown."""

    id: str
    kind: RunKind
    label: str
    status: RunStatus
    seed: int
    spec: Mapping[str, Any]
    spec_hash: str
    source_id: str
    environment: Mapping[str, Any]
    device: str | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    total_epochs: int
    last_epoch: int
    # How many times a worker claimed the run (its fencing token, which only ever grows): above one, the
    # run waited between attempts (a retry, a worker lost or shut down) for a time nothing records.
    claims: int = 1

    @property
    def reused(self) -> bool:
        return self.source_id != self.id

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    @property
    def wall_seconds(self) -> float | None:
        """finished - started, only for a run claimed once: with several attempts that span holds the
        idle time between them (a resumed run's wait for ``retry``), which is not time spent running."""
        if self.started_at and self.finished_at and self.claims <= 1:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None


@dataclass(frozen=True)
class TrainRun:
    run: RunInfo
    regime: str
    epochs: tuple[EpochRecord, ...]

    @property
    def label(self) -> str:
        """The run's label: its regime for the seed's runs, e.g. ``imagenet+upscaled`` for a variant."""
        return self.run.label or self.regime

    @property
    def epochs_done(self) -> int:
        return max(self.run.last_epoch, self.epochs[-1].epoch if self.epochs else 0)

    @property
    def final_val_accuracy(self) -> float | None:
        values = [e.val_accuracy for e in self.epochs if e.val_accuracy is not None]
        return values[-1] if values else None

    @property
    def best_val_accuracy(self) -> float | None:
        values = [e.val_accuracy for e in self.epochs if e.val_accuracy is not None]
        return max(values) if values else None

    @property
    def seconds(self) -> float | None:
        """Time spent running: finished - started for a run claimed once, else (several attempts, or
        still running) the sum of its epochs' own seconds, which no wait between attempts inflates."""
        wall = self.run.wall_seconds
        if wall is not None:
            return wall
        return sum(e.seconds for e in self.epochs) if self.epochs else None

    @property
    def mean_images_per_second(self) -> float | None:
        values = [e.images_per_second for e in self.epochs if e.images_per_second > 0]
        return sum(values) / len(values) if values else None

    @property
    def phase_change_epoch(self) -> float | None:
        """Where fine-tuning switches from the head to the whole network (between two epochs)."""
        if self.regime != Regime.FINETUNE:
            return None
        heads = [e.epoch for e in self.epochs if e.phase == "head"]
        if heads and any(e.phase == "tune" for e in self.epochs):
            return max(heads) + 0.5
        head_epochs = self.run.spec.get("head_epochs")
        return float(head_epochs) + 0.5 if isinstance(head_epochs, int) else None


@dataclass(frozen=True)
class VisRun:
    run: RunInfo
    image_kind: str
    layers: tuple[str, ...]
    input_image: Path | None
    layer_images: Mapping[str, Path]
    # layer -> (mean activation of the starting image, of the final image), from the run's result.json.
    activations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    model: RunInfo | None = None  # the training whose model was visualized (source "checkpoint")


@dataclass(frozen=True)
class SweepInfo:
    id: str
    plan: str
    profile: str
    overrides: Mapping[str, Any]
    code_version: str
    created_at: datetime | None


@dataclass(frozen=True)
class ReportData:
    sweep: SweepInfo
    train: Mapping[str, tuple[TrainRun, ...]]  # regime -> the seed's runs, in REGIME_ORDER
    visualizations: Mapping[str, tuple[VisRun, ...]]  # image kind -> runs
    store: ArtifactStore  # where the runs' files are (the report reads verified local copies)
    loaded_at: datetime
    warnings: tuple[str, ...] = field(default=())
    variants: Mapping[str, tuple[TrainRun, ...]] = field(default_factory=dict)  # label -> runs
    other_runs: tuple[RunInfo, ...] = field(default=())  # e.g. the report run itself

    @property
    def all_runs(self) -> tuple[RunInfo, ...]:
        runs = [t.run for ts in self.train.values() for t in ts]
        runs += [t.run for ts in self.variants.values() for t in ts]
        runs += [v.run for vs in self.visualizations.values() for v in vs]
        return tuple(runs)

    @property
    def trainings(self) -> tuple[TrainRun, ...]:
        """Every training of the sweep: the seed's regimes, then the variants."""
        return tuple(t for group in (self.train, self.variants) for ts in group.values() for t in ts)

    @property
    def has_visualizations(self) -> bool:
        """Whether the report has an Exercise 4 section: the ``all`` plan, or any visualization run."""
        return self.sweep.plan == "all" or any(self.visualizations.values())

    @property
    def seeds_per_regime(self) -> int:
        return max((len(v) for v in self.train.values()), default=0)


def _image_kind(run: Run) -> str:
    label = (run.label or "").split("/")[0]
    if label in IMAGE_KINDS:
        return label
    image = str((run.spec or {}).get("image", ""))
    return image_kind(image)


def _run_info(run: Run, source: Run) -> RunInfo:
    return RunInfo(
        id=run.id,
        kind=RunKind(_text(run.kind)),
        label=run.label or "",
        status=RunStatus(_text(run.status)),
        seed=run.seed,
        spec=MappingProxyType(dict(run.spec or {})),
        spec_hash=run.spec_hash or "",
        source_id=source.id,
        environment=MappingProxyType(dict(source.environment or {})),
        device=source.device or run.device,
        worker=source.worker or run.worker,
        started_at=source.started_at if run.reused_run_id else run.started_at,
        finished_at=source.finished_at if run.reused_run_id else run.finished_at,
        error=run.error or (source.error if run.reused_run_id else None),
        total_epochs=run.total_epochs or source.total_epochs,
        last_epoch=max(run.last_epoch, source.last_epoch),
        claims=source.fence or 0,
    )


def _sweep(session: Session, sweep_id: str | None) -> Sweep:
    if sweep_id is not None:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            raise UnknownSweepError(sweep_id)
        return sweep
    latest = session.scalars(
        select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(1)
    ).first()
    if latest is None:
        raise NoSweepError()
    return latest


def _by_run(rows: Iterable[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.run_id, []).append(row)
    return grouped


def load_report_data(session: Session, store: ArtifactStore, sweep_id: str | None = None) -> ReportData:
    """Read sweep ``sweep_id`` (default: the latest) with its runs, epochs and image artifacts."""
    sweep = _sweep(session, sweep_id)
    runs = list(session.scalars(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.created_at, Run.id)))
    by_id = {r.id: r for r in runs}
    missing = {r.reused_run_id for r in runs if r.reused_run_id and r.reused_run_id not in by_id}
    if missing:
        by_id.update({r.id: r for r in session.scalars(select(Run).where(Run.id.in_(missing)))})
    source_ids = {r.results_run_id if r.results_run_id in by_id else r.id for r in runs}
    epochs = _by_run(
        session.scalars(
            select(EpochMetric).where(EpochMetric.run_id.in_(source_ids)).order_by(EpochMetric.epoch)
        )
    )
    artifacts = _by_run(session.scalars(select(Artifact).where(Artifact.run_id.in_(source_ids))))
    depends = _by_run(session.scalars(select(RunDependency).where(RunDependency.run_id.in_(list(by_id)))))

    warnings: list[str] = []
    train: dict[str, list[TrainRun]] = {regime: [] for regime in REGIME_ORDER}
    variants: dict[str, list[TrainRun]] = {}
    vis: dict[str, list[VisRun]] = {kind: [] for kind in IMAGE_KINDS}
    infos: dict[str, RunInfo] = {}
    others: list[RunInfo] = []
    for run in runs:
        kind = RunKind(_text(run.kind))
        source = by_id.get(run.results_run_id, run)
        if run.reused_run_id and run.reused_run_id not in by_id:
            warnings.append(f"run {run.id} reuses {run.reused_run_id}, which is not in the database")
        info = infos[run.id] = _run_info(run, source)
        if kind == RunKind.TRAIN:
            regime = str((run.spec or {}).get("regime") or run.label)
            rows = tuple(EpochRecord.of(m) for m in epochs.get(source.id, []))
            target = train if (run.label or regime) == regime else variants
            target.setdefault(run.label or regime, []).append(TrainRun(run=info, regime=regime, epochs=rows))
        elif kind == RunKind.VISUALIZE:
            layers = tuple(str(x) for x in (run.spec or {}).get("layers") or ())
            input_image: Path | None = None
            layer_images: dict[str, Path] = {}
            activations: dict[str, tuple[float, float]] = {}
            for art in artifacts.get(source.id, []):
                if art.path.rsplit("/", 1)[-1] == RESULT_FILE:
                    activations = _activations(store, art, warnings)
                    continue
                if _text(art.kind) != "image":
                    continue
                if not store.exists(art.path):
                    warnings.append(f"artifact {art.path} of run {source.id} is missing from the store")
                    continue
                # A figure must show what the run produced: a changed file is an error naming it.
                path = store.local_copy(art.path, art.sha256)
                if path.stem == "input":
                    input_image = path
                else:
                    layer_images[path.stem] = path
            if not layers:
                layers = tuple(sorted(layer_images))
            image_kind = _image_kind(run)
            model_id = next((d.depends_on_id for d in depends.get(run.id, [])), None)
            vis[image_kind].append(
                VisRun(
                    run=info,
                    image_kind=image_kind,
                    layers=layers,
                    input_image=input_image,
                    layer_images=MappingProxyType(layer_images),
                    activations=MappingProxyType(activations),
                    model=infos.get(model_id) if model_id else None,
                )
            )
        else:
            others.append(info)
    return ReportData(
        sweep=SweepInfo(
            id=sweep.id,
            plan=sweep.plan,
            profile=sweep.profile,
            overrides=MappingProxyType(dict(sweep.overrides or {})),
            code_version=sweep.code_version,
            created_at=sweep.created_at,
        ),
        train=MappingProxyType({k: tuple(v) for k, v in train.items()}),
        visualizations=MappingProxyType({k: tuple(v) for k, v in vis.items()}),
        store=store,
        loaded_at=datetime.now().astimezone(),
        warnings=tuple(warnings),
        variants=MappingProxyType({k: tuple(v) for k, v in variants.items()}),
        other_runs=tuple(others),
    )


def _activations(store: ArtifactStore, art: Artifact, warnings: list[str]) -> dict[str, tuple[float, float]]:
    """layer -> (before, after) from a visualization's result.json, its sha256 verified like the images'.

    A changed file is an error naming it (as for images); an unreadable one only loses the line under the
    figure, with a warning."""
    if not store.exists(art.path):
        warnings.append(f"artifact {art.path} of run {art.run_id} is missing from the store")
        return {}
    data = store.read_bytes(art.path, art.sha256)
    try:
        summary = json.loads(data.decode("utf-8"))
        before, after = summary["activation_before"], summary["activation_after"]
        return {layer: (float(before[layer]), float(after[layer])) for layer in before if layer in after}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.append(f"{art.path}: mean activations not readable ({type(exc).__name__})")
        return {}
