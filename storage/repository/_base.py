"""Shared pieces of the repository: compare-and-set, upserts, the fencing condition."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, case, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from storage.clock import db_ago, db_now
from storage.errors import LeaseLost, NotFound
from storage.models import (
    Run,
    RunStatus,
)


def _cas(s: Session, stmt: Update) -> bool:
    """Run a conditional UPDATE; True when it changed exactly the row it targeted."""
    result = cast(CursorResult[Any], s.execute(stmt.execution_options(synchronize_session="fetch")))
    return result.rowcount == 1


def _insert(s: Session, model: type[Any]) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO UPDATE (SQLite >= 3.24 and PostgreSQL)."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"upserts are not implemented for {name}")


def _refresh_run(s: Session, run_id: str) -> Run:
    run = s.get(Run, run_id, populate_existing=True)
    if run is None:
        raise NotFound("run", run_id)
    return run


def _held(run_id: str, fence: int) -> tuple[Any, ...]:
    """The condition of every write made on behalf of a run: the writer's attempt still holds it."""
    return (Run.id == run_id, Run.status == RunStatus.RUNNING, Run.fence == fence)


def _fenced(s: Session, run_id: str, fence: int, **values: Any) -> None:
    """UPDATE the run only if attempt ``fence`` still holds it, else raise :class:`LeaseLost`.

    The condition sits in the UPDATE itself (no read-then-write): on PostgreSQL the row lock it takes
    orders it against a concurrent claim until the caller's transaction ends, and SQLite's write lock
    serialises everything, so whatever the caller writes in the same transaction (an epoch row, an
    artifact) is committed only by the attempt that holds the run.
    """
    values.setdefault("heartbeat_at", db_now(s))
    if not _cas(s, update(Run).where(*_held(run_id, fence)).values(**values)):
        raise LeaseLost(run_id, fence)


def _stale(s: Session, lease_seconds: float) -> Any:
    return or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < db_ago(s, lease_seconds))


_BACK_IN_QUEUE: dict[str, Any] = {
    "status": RunStatus.QUEUED,
    "enqueued_at": None,
    "received_at": None,
    "received_by": None,
    "worker": None,
    "heartbeat_at": None,
    "progress": None,
}


_REFUND = case((Run.attempts > 0, Run.attempts - 1), else_=0)
