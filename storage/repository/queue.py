"""Runs and their messages: sent, received, lost; what the reaper scans for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, exists, select, update
from sqlalchemy.orm import Session, aliased

from storage.clock import db_ago, db_now
from storage.errors import NotFound
from storage.models import (
    TERMINAL_STATUSES,
    Run,
    RunDependency,
    RunKind,
    RunStatus,
    Worker,
)
from storage.repository._base import _cas, _stale


def clear_enqueued(s: Session, run_id: str) -> None:
    """Forget that a queued run was sent: it is sent again once it is ready (its message was consumed)."""
    _cas(
        s,
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(enqueued_at=None, received_at=None, received_by=None),
    )


def mark_enqueued(s: Session, run_id: str) -> None:
    """Record that a task message for this run was sent (so the monitor does not send another).

    The message goes out before this is recorded, so a worker may already have marked it received:
    that mark stays (clearing it here would hide a message that dies with that worker).
    """
    if not _cas(s, update(Run).where(Run.id == run_id).values(enqueued_at=db_now(s))):
        raise NotFound("run", run_id)


def mark_received(s: Session, run_id: str, worker: str) -> bool:
    """A worker took the run's message off the broker. If that worker dies before a task process claims
    the run, the message is gone with it (the embedded broker deletes it once fetched; Redis hides it for
    the visibility timeout): :func:`lost_messages` finds such runs so the reaper sends them again."""
    return _cas(
        s,
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(received_at=db_now(s), received_by=worker),
    )


def stale_runs(s: Session, *, lease_seconds: float) -> list[Run]:
    """Running runs whose heartbeat is older than the lease: their worker is presumed dead."""
    stmt = (
        select(Run)
        .where(Run.status == RunStatus.RUNNING, _stale(s, lease_seconds))
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


def lost_messages(s: Session, *, lease_seconds: float) -> list[Run]:
    """Queued runs whose message was taken by a worker that is no longer alive (no liveness row refreshed
    within the lease) and was received at least a lease ago: that message will never be executed."""
    alive = exists().where(
        Worker.name == Run.received_by,
        Worker.stopped_at.is_(None),
        Worker.last_seen_at >= db_ago(s, lease_seconds),
    )
    stmt = (
        select(Run)
        .where(
            Run.status == RunStatus.QUEUED,
            Run.received_by.is_not(None),
            Run.received_at < db_ago(s, lease_seconds),
            ~alive,
        )
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


def forget_lost_message(s: Session, run_id: str, received_by: str) -> bool:
    """Clear a lost message's marks (only if the same dead worker still holds them), so it is sent again."""
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED, Run.received_by == received_by)
        .values(enqueued_at=None, received_at=None, received_by=None)
    )
    return _cas(s, stmt)


def unclaimed_messages(s: Session, *, after_seconds: float) -> list[Run]:
    """Queued runs whose message a worker received at least ``after_seconds`` ago (alive or not: a dead
    one's are :func:`lost_messages` after a lease) that no task process claimed since: a task claims
    within seconds of the receipt, or forgets the message when the run must wait. Whatever lost the
    message (a task that failed before its claim and could neither say so nor give the message back,
    a worker that dropped what it had reserved), it will not be executed. On the database's clock.

    A message with no receipt is never taken for lost: a backlog waits in the broker for hours behind
    long trainings, and the database cannot tell it from a message the broker dropped.
    """
    stmt = select(Run).where(*_unclaimed_for(s, after_seconds)).order_by(Run.created_at, Run.id)
    return list(s.scalars(stmt))


def forget_unclaimed_message(s: Session, run_id: str, *, after_seconds: float) -> bool:
    """Clear the marks of a message :func:`unclaimed_messages` found, so it is sent again, only if it is
    still unclaimed that long (checked in the statement): of reapers racing, one re-sends, and a run is
    re-sent at most once every ``after_seconds``, since sending and receiving it stamp it anew."""
    stmt = (
        update(Run)
        .where(Run.id == run_id, *_unclaimed_for(s, after_seconds))
        .values(enqueued_at=None, received_at=None, received_by=None)
    )
    return _cas(s, stmt)


def _unclaimed_for(s: Session, seconds: float) -> tuple[Any, ...]:
    return (
        Run.status == RunStatus.QUEUED,
        Run.enqueued_at < db_ago(s, seconds),
        Run.received_by.is_not(None),
        Run.received_at < db_ago(s, seconds),
    )


def ready_unenqueued_runs(s: Session) -> list[Run]:
    """Queued runs never sent to the broker whose dependencies have all succeeded."""
    dep = aliased(Run)
    # A report reports partial sweeps: it waits for its dependencies to end, not to succeed.
    unmet = exists().where(
        RunDependency.run_id == Run.id,
        RunDependency.depends_on_id == dep.id,
        case(
            (Run.kind == RunKind.REPORT, dep.status.not_in(list(TERMINAL_STATUSES))),
            else_=dep.status != RunStatus.SUCCEEDED,
        ),
    )
    stmt = (
        select(Run)
        # A follower (``reused_run_id``) is never sent: it ends as the run it follows ends.
        .where(Run.status == RunStatus.QUEUED, Run.enqueued_at.is_(None), Run.reused_run_id.is_(None), ~unmet)
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


def runs_blocked_by_failure(s: Session) -> list[tuple[Run, Run]]:
    """(queued run, its failed or cancelled dependency) pairs: such runs can never start."""
    dep = aliased(Run)
    stmt = (
        select(Run, dep)
        .join(RunDependency, RunDependency.run_id == Run.id)
        .join(dep, dep.id == RunDependency.depends_on_id)
        .where(
            Run.status == RunStatus.QUEUED,
            Run.kind != RunKind.REPORT,
            dep.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]),
        )
        .order_by(Run.created_at, Run.id, dep.id)
    )
    return [(row[0], row[1]) for row in s.execute(stmt)]
