"""How fast can storage record epochs? Run by hand: ``python bench/storage_writes.py [--postgres URL]``.

Measures ``record_epoch`` with one transaction per epoch (as a worker does), first from one process,
then from several processes at once (the concurrency test's shape), on SQLite and on PostgreSQL. Each
write is fenced (it carries the claim's token, checked in the same UPDATE), as in a real worker.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from contract.records import EpochRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import repository as repo  # noqa: E402
from storage.db import database_for_url, reset_databases  # noqa: E402
from storage.models import RunKind  # noqa: E402


def _write(url: str, run_id: str, epochs: int, barrier: object | None = None) -> float:
    db = database_for_url(url, ensure_schema=False)
    with db.session() as s:  # as a worker: claim the run, then every write carries the attempt's token
        claimed = repo.claim_run(s, run_id, worker="bench", device="cpu", lease_seconds=60)
        assert claimed is not None
    if barrier is not None:
        barrier.wait()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        with db.session() as s:
            repo.record_epoch(
                s,
                run_id,
                EpochRecord(
                    epoch=epoch,
                    phase="train",
                    loss=1.0,
                    accuracy=0.5,
                    val_loss=1.1,
                    val_accuracy=0.4,
                    lr=0.01,
                    seconds=1.0,
                    images_per_second=1000.0,
                ),
                fence=claimed.fence,
            )
    return time.perf_counter() - start


def _child(url: str, run_id: str, epochs: int, barrier: object, out: object) -> None:
    out.put(_write(url, run_id, epochs, barrier))  # type: ignore[attr-defined]


def _runs(url: str, n: int) -> list[str]:
    db = database_for_url(url)
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="bench", profile="bench", overrides={}, code_version="bench")
        return [
            repo.create_run(
                s,
                sweep_id=sweep.id,
                kind=RunKind.TRAIN,
                label=f"b{i}",
                spec={},
                spec_hash=f"b-{sweep.id}-{i}",
                seed=i,
            ).id
            for i in range(n)
        ]


def bench(name: str, url: str, epochs: int, writers: int, per_writer: int) -> None:
    (run_id,) = _runs(url, 1)
    elapsed = _write(url, run_id, epochs)
    print(f"{name:9s} 1 process : {epochs} epochs in {elapsed:6.2f} s = {epochs / elapsed:7.0f} rows/s")
    run_ids = _runs(url, writers)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(url, r, per_writer, barrier, out)) for r in run_ids]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    times = [out.get(timeout=300) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    total = writers * per_writer
    print(
        f"{name:9s} {writers} processes: {total} epochs in {wall:6.2f} s = {total / wall:7.0f} rows/s "
        f"(slowest writer {max(times):.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", f"sqlite:///{tmp}/bench.db", args.epochs, args.writers, args.per_writer)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.postgres)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        print(f"postgres  skipped: {str(exc).splitlines()[0]}")
        return
    try:
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
        bench("postgres", url, args.epochs, args.writers, args.per_writer)
    finally:
        reset_databases()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
