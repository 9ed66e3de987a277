"""A run's state machine. Every status change is one conditional ``UPDATE ... WHERE status = ...``
(compare-and-set), and every change made on behalf of an attempt carries its fencing token."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from storage.clock import db_ago, db_now
from storage.errors import IllegalTransition
from storage.models import (
    TERMINAL_STATUSES,
    Run,
    RunStatus,
)
from storage.repository._base import _BACK_IN_QUEUE, _REFUND, _cas, _fenced, _held, _refresh_run, _stale
from storage.repository.runs import follow_or_own, runs_held_by, settle_follower, settle_followers


def claim_run(s: Session, run_id: str, *, worker: str, device: str, lease_seconds: float) -> Run | None:
    """Atomically take a queued run, or a running one whose heartbeat is older than the lease.

    Returns the run (now ``running``, held by ``worker``, ``attempts`` incremented, a new ``fence``: the
    token every later write of this attempt must carry) or None when another attempt holds it, it is
    finished, its cancel was requested, or it does not exist.
    """
    now = db_now(s)
    stmt = (
        update(Run)
        .where(
            Run.id == run_id,
            Run.cancel_requested.is_(False),
            or_(
                Run.status == RunStatus.QUEUED,
                and_(
                    Run.status == RunStatus.RUNNING,
                    or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < db_ago(s, lease_seconds)),
                ),
            ),
        )
        .values(
            status=RunStatus.RUNNING,
            worker=worker,
            device=device,
            heartbeat_at=now,
            started_at=case((Run.started_at.is_(None), now), else_=Run.started_at),
            attempts=Run.attempts + 1,
            fence=Run.fence + 1,
            received_at=None,
            received_by=None,
            progress=None,
        )
    )
    if not _cas(s, stmt):
        return None
    return _refresh_run(s, run_id)


def heartbeat(s: Session, run_id: str, fence: int, *, progress: dict[str, Any] | None = None) -> bool:
    """Prove attempt ``fence`` still runs ``run_id`` (and, with ``progress``, say how far into its epoch
    it is); False when it lost the run (taken over, cancelled)."""
    values: dict[str, Any] = {"heartbeat_at": db_now(s)}
    if progress is not None:
        values["progress"] = progress
    return _cas(s, update(Run).where(*_held(run_id, fence)).values(**values))


def record_environment(
    s: Session, run_id: str, environment: dict[str, Any], *, fence: int, device: str | None = None
) -> None:
    """What the run executes on and with (device; Keras version, backend, ...), for status and provenance."""
    values: dict[str, Any] = {"environment": environment}
    if device is not None:
        values["device"] = device
    _fenced(s, run_id, fence, **values)


def finish_run(
    s: Session,
    run_id: str,
    status: RunStatus,
    *,
    fence: int,
    error: str | None = None,
    traceback: str | None = None,
) -> bool:
    """running -> succeeded/failed/cancelled by the attempt holding it. False when it no longer does."""
    status = RunStatus(status)
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"finish_run needs a terminal status, not {status.value}")
    stmt = (
        update(Run)
        .where(*_held(run_id, fence))
        .values(status=status, finished_at=db_now(s), error=error, traceback=traceback)
    )
    if not _cas(s, stmt):
        return False
    if status == RunStatus.SUCCEEDED:
        settle_followers(s, run_id)  # runs that joined this one succeed with it, in this transaction
    return True


def fail_run(
    s: Session,
    run_id: str,
    error: str,
    traceback: str | None = None,
    *,
    lost_after_seconds: float | None = None,
) -> bool:
    """queued/running -> failed (a dependency failed, or the attempt cap was reached).

    With ``lost_after_seconds`` only a running run whose heartbeat is older than that is failed (checked
    in the same statement: a heartbeat that just arrived wins).
    """
    conditions: list[Any] = [Run.id == run_id]
    if lost_after_seconds is None:
        conditions.append(Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
    else:
        conditions += [Run.status == RunStatus.RUNNING, _stale(s, lost_after_seconds)]
    stmt = (
        update(Run)
        .where(*conditions)
        .values(status=RunStatus.FAILED, finished_at=db_now(s), error=error, traceback=traceback)
    )
    return _cas(s, stmt)


def hand_back_run(s: Session, run_id: str, *, fence: int) -> bool:
    """running -> queued by the attempt holding it (its worker is shutting down). That is not a lost
    worker, so the attempt is given back. ``enqueued_at`` is cleared so that a fresh message is sent."""
    return _cas(s, update(Run).where(*_held(run_id, fence)).values(**_BACK_IN_QUEUE, attempts=_REFUND))


def requeue_stale_run(s: Session, run_id: str, *, lease_seconds: float) -> bool:
    """running -> queued for a run whose heartbeat is older than the lease (its worker is presumed dead;
    checked in the same statement, so a heartbeat that just arrived wins). The attempt counts."""
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.RUNNING, _stale(s, lease_seconds))
        .values(**_BACK_IN_QUEUE)
    )
    return _cas(s, stmt)


def cancel_stale_run(s: Session, run_id: str, *, lease_seconds: float) -> bool:
    """running -> cancelled for a run whose cancel was requested and whose worker stopped sending
    heartbeats: nobody is left to stop it at an epoch boundary, and it must never be claimed again."""
    stmt = (
        update(Run)
        .where(
            Run.id == run_id,
            Run.status == RunStatus.RUNNING,
            Run.cancel_requested.is_(True),
            _stale(s, lease_seconds),
        )
        .values(status=RunStatus.CANCELLED, finished_at=db_now(s), error="cancelled by request")
    )
    return _cas(s, stmt)


def release_worker_runs(s: Session, worker: str) -> list[str]:
    """running -> queued for every run ``worker`` holds, its attempt given back.

    For a caller that has made sure the worker's processes are dead (``submit`` stopping its own local
    worker on Ctrl-C): the runs need not wait for their lease to expire, and since the worker did not
    fail them, the attempt does not count. Returns the ids of the runs released.
    """
    released = []
    for run in runs_held_by(s, worker):
        stmt = update(Run).where(*_held(run.id, run.fence)).values(**_BACK_IN_QUEUE, attempts=_REFUND)
        if _cas(s, stmt):
            released.append(run.id)
    return released


def request_cancel(s: Session, run_id: str, *, lease_seconds: float) -> RunStatus:
    """queued -> cancelled at once (returns CANCELLED); running -> ``cancel_requested`` (returns RUNNING):
    the task stops at its next epoch boundary. A running run whose heartbeat is older than the lease has
    no worker left to stop it: it is cancelled at once (CANCELLED). A finished run raises
    :class:`IllegalTransition`."""
    for _ in range(3):  # the status may change between the conditional updates; settle in a few rounds
        queued = (
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
            .values(status=RunStatus.CANCELLED, finished_at=db_now(s), error="cancelled while queued")
        )
        if _cas(s, queued):
            return RunStatus.CANCELLED
        orphaned = (
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.RUNNING, _stale(s, lease_seconds))
            .values(
                status=RunStatus.CANCELLED,
                cancel_requested=True,
                finished_at=db_now(s),
                error="cancelled by request (its worker was gone)",
            )
        )
        if _cas(s, orphaned):
            return RunStatus.CANCELLED
        running = (
            update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING).values(cancel_requested=True)
        )
        if _cas(s, running):
            return RunStatus.RUNNING
        current = _refresh_run(s, run_id)
        if current.status.is_terminal:
            raise IllegalTransition(run_id, current.status, RunStatus.CANCELLED)
    raise IllegalTransition(run_id, _refresh_run(s, run_id).status, RunStatus.CANCELLED)


def cancel_requested(s: Session, run_id: str) -> bool:
    return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def retry_run(s: Session, run_id: str) -> None:
    """failed/cancelled -> queued with a fresh attempt budget; anything else raises IllegalTransition.
    Who computes its identity is decided again (:func:`~storage.repository.runs.follow_or_own`)."""
    if _refresh_run(s, run_id).status in (RunStatus.FAILED, RunStatus.CANCELLED):
        follow_or_own(s, run_id)
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
        .values(
            **_BACK_IN_QUEUE,
            attempts=0,
            error=None,
            traceback=None,
            cancel_requested=False,
            finished_at=None,
        )
    )
    if not _cas(s, stmt):
        raise IllegalTransition(run_id, _refresh_run(s, run_id).status, RunStatus.QUEUED)
    settle_follower(s, run_id)
