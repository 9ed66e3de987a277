"""Functions run in child processes (multiprocessing spawn) by the concurrency tests."""

from __future__ import annotations

import traceback
from typing import Any

from sqlalchemy import select

from contract.records import EpochRecord
from storage import repository as repo
from storage.db import database_for_url
from storage.models import Run


def claim_race(url: str, run_ids: list[str], name: str, barrier: Any, results: Any) -> None:
    """For each run: wait for every racer, then try to claim it. Reports (run_id, name, won)."""
    try:
        db = database_for_url(url, ensure_schema=False)
        with db.session() as s:  # warm the connection before racing
            s.execute(select(Run.id).limit(1))
        for run_id in run_ids:
            barrier.wait(timeout=60)
            with db.session() as s:
                won = repo.claim_run(s, run_id, worker=name, device="cpu", lease_seconds=60) is not None
            results.put((run_id, name, won))
    except Exception:  # noqa: BLE001 - report to the parent instead of dying silently
        results.put(("error", name, traceback.format_exc()))


def write_epochs(url: str, run_id: str, epochs: int, barrier: Any, results: Any) -> None:
    """Record ``epochs`` epochs, one transaction each, as a worker does."""
    try:
        db = database_for_url(url, ensure_schema=False)
        with db.session() as s:
            claimed = repo.claim_run(s, run_id, worker=f"w-{run_id}", device="cpu", lease_seconds=60)
            assert claimed is not None
        barrier.wait(timeout=60)
        for epoch in range(1, epochs + 1):
            with db.session() as s:
                repo.record_epoch(
                    s,
                    run_id,
                    EpochRecord(
                        epoch=epoch,
                        phase="train",
                        loss=1.0 / epoch,
                        accuracy=epoch / (epochs + 1),
                        val_loss=None,
                        val_accuracy=None,
                        lr=0.01,
                        seconds=0.1,
                        images_per_second=1000.0,
                    ),
                    fence=claimed.fence,
                )
        results.put((run_id, "ok", None))
    except Exception:  # noqa: BLE001
        results.put((run_id, "error", traceback.format_exc()))


def create_schema(url: str, barrier: Any, results: Any) -> None:
    """First use of a fresh database by several processes at once."""
    try:
        barrier.wait(timeout=60)
        db = database_for_url(url)
        results.put((url, "ok", db.current_revision()))
    except Exception:  # noqa: BLE001
        results.put((url, "error", traceback.format_exc()))
