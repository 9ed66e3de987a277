"""Sweeps written through the repository, as workers write them (claim, epochs, checkpoint, finish), in a
real SQLite database under a CONVLAB_HOME: the data of the export, compare, tensorboard and API tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.records import EpochRecord
from contract.settings import Settings
from contract.specs import TrainSpec
from storage import repository as repo
from storage.db import Database, get_database
from storage.models import RunKind, RunStatus


@dataclass(frozen=True)
class Planned:
    label: str
    regime: str
    seed: int = 0
    epochs: int = 3
    done: int | None = None  # epochs recorded; default all
    status: RunStatus = RunStatus.SUCCEEDED
    start: float = 0.3  # validation accuracy of epoch 1; +0.05 per epoch
    spec_extra: dict[str, Any] | None = None


def database(home: Path) -> tuple[Settings, Database]:
    settings = Settings(home=home)
    home.mkdir(parents=True, exist_ok=True)
    db = get_database(settings)
    db.ensure_schema()
    return settings, db


def val_accuracy(p: Planned, epoch: int) -> float:
    return round(p.start + 0.05 * (epoch - 1), 4)


def add_sweep(
    settings: Settings,
    db: Database,
    runs: list[Planned],
    *,
    profile: str = "smoke",
    overrides: dict[str, str] | None = None,
    code_version: str = "0.1.0+src.test",
    plan: str = "all",
) -> dict[str, str]:
    """Returns {"sweep": id, label (or label/seed-N): run id}."""
    ids: dict[str, str] = {}
    with db.session() as s:
        sweep = repo.create_sweep(
            s, plan=plan, profile=profile, overrides=overrides or {}, code_version=code_version
        )
        ids["sweep"] = sweep.id
        for p in runs:
            spec = TrainSpec(regime=p.regime, seed=p.seed, epochs=p.epochs, alpha=0.25).to_dict()
            spec.update(p.spec_extra or {})
            run = repo.create_run(
                s,
                sweep_id=sweep.id,
                kind=RunKind.TRAIN,
                label=p.label,
                spec=spec,
                spec_hash=f"{sweep.id}-{p.label}-{p.seed}",
                seed=p.seed,
                total_epochs=p.epochs,
            )
            key = p.label if p.seed == 0 else f"{p.label}/seed-{p.seed}"
            ids[key] = run.id
            claimed = repo.claim_run(s, run.id, worker="w@host", device="cpu", lease_seconds=60)
            assert claimed is not None
            done = p.epochs if p.done is None else p.done
            for e in range(1, done + 1):
                checkpoint = _checkpoint(settings, run.id, claimed.fence, e)
                repo.record_epoch(s, run.id, epoch_record(p, e), fence=claimed.fence, checkpoint=checkpoint)
            if p.status != RunStatus.RUNNING:
                assert repo.finish_run(s, run.id, p.status, fence=claimed.fence)
    return ids


def epoch_record(p: Planned, e: int) -> EpochRecord:
    val = val_accuracy(p, e)
    return EpochRecord(
        epoch=e,
        phase="train",
        loss=round(2.0 - 0.1 * e, 4),
        accuracy=round(val + 0.1, 4),
        val_loss=round(2.1 - 0.1 * e, 4),
        val_accuracy=val,
        lr=1e-4,
        seconds=12.5,
        images_per_second=800.0 + e,
    )


def _checkpoint(settings: Settings, run_id: str, fence: int, epoch: int) -> str:
    """A state file naming the epoch's model file, as the engine writes it (the model file itself is
    written by the tests that load it)."""
    folder = f"runs/{run_id}/attempt-{fence}"
    state = {"version": 3, "epoch": epoch, "model_file": f"model-e{epoch:04d}.keras", "history": []}
    path = settings.artifacts_dir / folder / f"state-e{epoch:04d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    return f"{folder}/state-e{epoch:04d}.json"


def add_reused(db: Database, source_run: str, label: str) -> dict[str, str]:
    """A new sweep with one training that reuses ``source_run`` (cached)."""
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="0.1.0+src.test")
        source = repo.get_run(s, source_run)
        run = repo.create_run(
            s,
            sweep_id=sweep.id,
            kind=RunKind.TRAIN,
            label=label,
            spec=dict(source.spec),
            spec_hash=source.spec_hash,
            seed=source.seed,
            total_epochs=source.total_epochs,
            status=RunStatus.SUCCEEDED,
            reused_run_id=source_run,
        )
        return {"sweep": sweep.id, label: run.id}
