"""Progress inside an epoch: what the heartbeat carries becomes a partial bar, a percentage and an ETA."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.records import EpochRecord
from contract.settings import load_settings
from orchestrator import monitor, rows
from storage import repository as repo
from storage.db import Database, get_database, reset_databases
from storage.models import RunKind


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = get_database(load_settings({"CONVLAB_HOME": str(tmp_path)}))
    yield database
    reset_databases()


def _running(db: Database, epochs: int = 60) -> tuple[str, str, int]:
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="paper", overrides={}, code_version="t").id
        run = repo.create_run(
            s,
            sweep_id=sweep,
            kind=RunKind.TRAIN,
            label="scratch",
            spec={"batch_size": 32},
            spec_hash="h",
            seed=0,
            total_epochs=epochs,
        ).id
        fence = repo.claim_run(s, run, worker="w", device="cpu", lease_seconds=60).fence  # type: ignore[union-attr]
    return sweep, run, fence


def test_progress_in_the_first_epoch_shows_in_status(db: Database) -> None:
    sweep, run, fence = _running(db)
    with db.session() as s:
        assert repo.heartbeat(
            s, run, fence, progress={"epoch": 1, "batches": 390, "of": 1560, "images_per_second": 800.0}
        )
    (row,) = rows.sweep_rows(db, sweep)
    assert row.epoch == 0 and row.epoch_fraction == pytest.approx(0.25)
    assert row.live_images_per_second == 800.0
    # 1560 batches of 32 at 800 images/s = 62.4 s an epoch; 59.75 epochs to go.
    assert row.eta_seconds == pytest.approx(62.4 * 59.75)
    cells = monitor._cells(row, monitor._LAYOUTS[0], ascii_only=True)
    assert cells["epoch"] == "0/60 +25%"
    detail = rows.run_detail(db, run)
    assert detail["epoch_fraction"] == 0.25 and detail["live_images_per_second"] == 800.0


def test_progress_of_an_epoch_already_recorded_is_ignored(db: Database) -> None:
    sweep, run, fence = _running(db)
    with db.session() as s:
        repo.heartbeat(
            s, run, fence, progress={"epoch": 1, "batches": 1563, "of": 1563, "images_per_second": 800.0}
        )
        metrics = {"loss": 2.0, "accuracy": 0.2, "val_loss": 2.1, "val_accuracy": 0.2, "lr": 1e-4}
        repo.record_epoch(
            s,
            run,
            EpochRecord(epoch=1, phase="train", seconds=70.0, images_per_second=800.0, **metrics),
            fence=fence,
        )
    (row,) = rows.sweep_rows(db, sweep)
    assert row.epoch == 1 and row.epoch_fraction is None
    assert row.eta_seconds == pytest.approx(70.0 * 59)


def test_a_new_attempt_starts_without_the_old_progress(db: Database) -> None:
    _, run, fence = _running(db)
    with db.session() as s:
        repo.heartbeat(s, run, fence, progress={"epoch": 1, "batches": 5, "of": 10, "images_per_second": 1.0})
        assert repo.hand_back_run(s, run, fence=fence)
        assert repo.get_run(s, run).progress is None


def test_the_bar_fills_inside_an_epoch(db: Database) -> None:
    sweep, run, fence = _running(db, epochs=2)
    (before,) = rows.sweep_rows(db, sweep)
    with db.session() as s:
        repo.heartbeat(
            s, run, fence, progress={"epoch": 1, "batches": 780, "of": 1560, "images_per_second": 800.0}
        )
    (during,) = rows.sweep_rows(db, sweep)
    bar = lambda row: str(monitor._cells(row, monitor._LAYOUTS[0], ascii_only=True)["progress"])  # noqa: E731
    assert bar(before).count("#") == 0
    assert bar(during).count("#") == 4  # half of the first of two epochs: a quarter of 16 cells
