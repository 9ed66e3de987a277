"""Small builders shared by the storage tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from contract.records import EpochRecord
from storage import repository as repo
from storage.models import Run, RunKind, RunStatus


def make_sweep(s: Session) -> str:
    return repo.create_sweep(s, plan="all", profile="smoke", overrides={"epochs": 1}, code_version="test").id


def make_run(
    s: Session,
    sweep_id: str | None = None,
    *,
    label: str = "scratch",
    depends_on: Sequence[str] = (),
    status: RunStatus = RunStatus.QUEUED,
    **kw: Any,
) -> Run:
    if sweep_id is None:
        sweep_id = make_sweep(s)
    return repo.create_run(
        s,
        sweep_id=sweep_id,
        kind=kw.pop("kind", RunKind.TRAIN),
        label=label,
        spec=kw.pop("spec", {"regime": label}),
        spec_hash=kw.pop("spec_hash", "h-" + label),
        seed=kw.pop("seed", 1),
        total_epochs=kw.pop("total_epochs", 3),
        depends_on=depends_on,
        status=status,
        **kw,
    )


def start(s: Session, run_id: str, worker: str = "w1") -> int:
    """Claim a queued run as a worker would; returns the attempt's fencing token."""
    run = repo.claim_run(s, run_id, worker=worker, device="cpu", lease_seconds=60)
    assert run is not None, f"{run_id} could not be claimed"
    return run.fence


def epoch(s: Session, run_id: str, n: int, *, fence: int, **kw: Any) -> None:
    values: dict[str, Any] = {
        "phase": "train",
        "loss": 1.0 / n,
        "accuracy": 0.1 * n,
        "val_loss": 1.5 / n,
        "val_accuracy": 0.09 * n,
        "lr": 0.01,
        "seconds": float(n),
        "images_per_second": 100.0 * n,
    }
    values.update(kw)
    repo.record_epoch(s, run_id, EpochRecord(epoch=n, **values), fence=fence)
