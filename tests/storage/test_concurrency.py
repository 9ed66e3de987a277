"""Real processes (multiprocessing spawn) racing on one database."""

from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Any

from sqlalchemy import func, select

from storage import repository as repo
from storage.db import Database, head_revision
from storage.models import EpochMetric, RunStatus

from . import _procs
from .helpers import make_run, make_sweep

RACERS = 3
ROUNDS = 5
WRITERS = 4
EPOCHS = 200


def _collect(results: Any, n: int, procs: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(n):
        try:
            out.append(results.get(timeout=90))
        except queue.Empty:
            break
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [r for r in out if r[0] == "error" or r[1] == "error"]
    assert not errors, errors
    assert len(out) == n, f"expected {n} results, got {out}"
    return out


def test_atomic_claim_raced_by_processes(db: Database) -> None:
    with db.session() as s:
        sweep_id = make_sweep(s)
        run_ids = [make_run(s, sweep_id, label=f"r{i}").id for i in range(ROUNDS)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [
        ctx.Process(target=_procs.claim_race, args=(db.url, run_ids, f"w{i}", barrier, results))
        for i in range(RACERS)
    ]
    for p in procs:
        p.start()
    out = _collect(results, RACERS * ROUNDS, procs)
    with db.session() as s:
        for run_id in run_ids:
            winners = [name for rid, name, won in out if rid == run_id and won]
            assert len(winners) == 1, (run_id, out)
            run = repo.get_run(s, run_id)
            assert run.status is RunStatus.RUNNING and run.worker == winners[0] and run.attempts == 1


def test_concurrent_epoch_writers_lose_nothing(db: Database) -> None:
    with db.session() as s:
        sweep_id = make_sweep(s)
        run_ids = [make_run(s, sweep_id, label=f"w{i}").id for i in range(WRITERS)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=_procs.write_epochs, args=(db.url, run_id, EPOCHS, barrier, results))
        for run_id in run_ids
    ]
    for p in procs:
        p.start()
    _collect(results, WRITERS, procs)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == WRITERS * EPOCHS
        for run_id in run_ids:
            assert repo.get_run(s, run_id).last_epoch == EPOCHS
            assert [m.epoch for m in repo.metric_history(s, run_id)] == list(range(1, EPOCHS + 1))


def test_first_use_by_several_processes_creates_the_schema_once(db_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_procs.create_schema, args=(db_url, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    out = _collect(results, 3, procs)
    assert {rev for _, _, rev in out} == {head_revision()}
