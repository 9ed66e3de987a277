"""Worker liveness rows (``orchestrator workers``, and the reaper deciding whether a message died)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.clock import db_ago, db_now
from storage.models import (
    Run,
    RunStatus,
    Worker,
)
from storage.repository._base import _cas, _insert


def upsert_worker(
    s: Session, *, name: str, host: str, pid: int, device: str, slots: int, code_identity: str | None = None
) -> Worker:
    """Register a starting worker; ``code_identity`` is the code it loaded (it claims only runs of it)."""
    now = db_now(s)
    values = {
        "code_identity": code_identity,
        "host": host,
        "pid": pid,
        "device": device,
        "slots": slots,
        "started_at": now,
        "last_seen_at": now,
        "stopped_at": None,
    }
    stmt = _insert(s, Worker).values(name=name, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))
    worker = s.get(Worker, name, populate_existing=True)
    assert worker is not None
    return worker


def touch_worker(s: Session, name: str) -> bool:
    return _cas(s, update(Worker).where(Worker.name == name).values(last_seen_at=db_now(s)))


def stop_worker(s: Session, name: str) -> bool:
    return _cas(s, update(Worker).where(Worker.name == name).values(stopped_at=db_now(s)))


def get_worker(s: Session, name: str) -> Worker | None:
    return s.get(Worker, name)


def live_workers(s: Session, *, within_seconds: float) -> list[Worker]:
    stmt = (
        select(Worker)
        .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= db_ago(s, within_seconds))
        .order_by(Worker.name)
    )
    return list(s.scalars(stmt))


def runs_for_no_live_worker(s: Session, *, within_seconds: float) -> list[Run]:
    """Queued runs submitted for a code that no live worker loaded: none will claim them until a worker
    of that code runs (runs without a recorded code are claimed by any worker)."""
    live_codes = select(Worker.code_identity).where(
        Worker.stopped_at.is_(None),
        Worker.last_seen_at >= db_ago(s, within_seconds),
        Worker.code_identity.is_not(None),
    )
    stmt = (
        select(Run)
        .where(
            Run.status == RunStatus.QUEUED,
            Run.code_identity.is_not(None),
            Run.code_identity.not_in(live_codes),
        )
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))
