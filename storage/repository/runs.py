"""Runs: creating them, reading them and their dependencies, finding an identical earlier one.

**Following.** A run with ``reused_run_id`` takes its results from that run instead of computing them: a
*cached* run (created ``succeeded``: the other run had already succeeded) or a *joined* one (created
``queued`` while an identical run was queued or running). A joined run depends on the run it follows
(a ``run_dependencies`` row), so it waits for it, and it ends as that run ends: succeeded in the same
transaction as the other run's success (:func:`settle_followers`, called by ``finish_run``), failed
naming it when it fails or is cancelled (the dependency rule). It is never sent to a worker. Cancelling
a follower (or its sweep) cancels the follower only: the run it follows belongs to another sweep and
runs on for it. Retrying a follower follows again where the other run is live, and makes it a run of its
own where the other one ended badly (:func:`follow_or_own`).

At most one *executed* run (no ``reused_run_id``) per identity is queued or running at any time: a
partial unique index (``uq_runs_live_identity``) holds it, so two submits at the same moment cannot both
insert one; the loser's insert fails and it joins (``orchestrator.submit.create_sweep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.clock import db_now
from storage.errors import NotFound
from storage.models import (
    Run,
    RunDependency,
    RunKind,
    RunStatus,
    utcnow,
)
from storage.repository._base import _cas


def create_run(
    s: Session,
    *,
    sweep_id: str | None,
    kind: RunKind,
    label: str,
    spec: dict[str, Any],
    spec_hash: str,
    seed: int,
    total_epochs: int = 0,
    max_attempts: int = 3,
    depends_on: Sequence[str] = (),
    status: RunStatus = RunStatus.QUEUED,
    reused_run_id: str | None = None,
    code_identity: str | None = None,
) -> Run:
    """A new run. ``status=SUCCEEDED`` with ``reused_run_id`` records a run satisfied by an earlier one
    (cached); ``QUEUED`` with ``reused_run_id`` one that follows an identical live run (joined), which
    then depends on it. An executed queued run raises ``IntegrityError`` at the flush when an identical
    one is already queued or running (the caller decides again, in a savepoint).
    ``code_identity``: the code ``spec_hash`` was computed for; only a worker running it claims the run."""
    if reused_run_id is not None and not RunStatus(status).is_terminal:
        depends_on = [*depends_on, reused_run_id]
    now = utcnow()
    run = Run(
        sweep_id=sweep_id,
        kind=RunKind(kind),
        label=label,
        spec=dict(spec),
        spec_hash=spec_hash,
        seed=seed,
        total_epochs=total_epochs,
        max_attempts=max_attempts,
        status=RunStatus(status),
        reused_run_id=reused_run_id,
        code_identity=code_identity,
        attempts=0,
        last_epoch=0,
        cancel_requested=False,
        created_at=now,
        finished_at=now if RunStatus(status).is_terminal else None,
    )
    s.add(run)
    s.flush()
    for dep in dict.fromkeys(depends_on):
        s.add(RunDependency(run_id=run.id, depends_on_id=dep))
    s.flush()
    return run


def set_run_code(s: Session, run_id: str, *, code_identity: str, spec_hash: str) -> None:
    """A queued run to be run by other code than it was submitted for (retry after a code change): its
    code and its identity follow, so that its result is never reused as the old code's."""
    s.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(code_identity=code_identity, spec_hash=spec_hash)
    )


def get_run(s: Session, run_id: str) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise NotFound("run", run_id)
    return run


def dependencies_of(s: Session, run_id: str) -> list[Run]:
    stmt = (
        select(Run)
        .join(RunDependency, RunDependency.depends_on_id == Run.id)
        .where(RunDependency.run_id == run_id)
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


def dependents_of(s: Session, run_id: str) -> list[Run]:
    stmt = (
        select(Run)
        .join(RunDependency, RunDependency.run_id == Run.id)
        .where(RunDependency.depends_on_id == run_id)
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


LIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def succeeded_runs_by_hash(s: Session, spec_hash: str) -> list[Run]:
    """Executed (not reused) runs of this identity that succeeded, newest first: reuse candidates."""
    stmt = (
        select(Run)
        .where(Run.spec_hash == spec_hash, Run.status == RunStatus.SUCCEEDED, Run.reused_run_id.is_(None))
        .order_by(Run.finished_at.desc(), Run.id)
    )
    return list(s.scalars(stmt))


def find_succeeded_by_hash(s: Session, spec_hash: str) -> Run | None:
    """The newest executed run of this identity that succeeded (unverified: see orchestrator.reuse)."""
    runs = succeeded_runs_by_hash(s, spec_hash)
    return runs[0] if runs else None


def live_run_by_hash(s: Session, spec_hash: str, *, other_than: str | None = None) -> Run | None:
    """The executed run of this identity that is queued or running (at most one: the unique index)."""
    stmt = select(Run).where(
        Run.spec_hash == spec_hash, Run.status.in_(LIVE_STATUSES), Run.reused_run_id.is_(None)
    )
    if other_than is not None:
        stmt = stmt.where(Run.id != other_than)
    return s.scalars(stmt.limit(1)).first()


def settle_followers(s: Session, run_id: str) -> list[str]:
    """``run_id`` succeeded: its joined runs succeed with it (in the caller's transaction)."""
    waiting = list(
        s.scalars(select(Run.id).where(Run.reused_run_id == run_id, Run.status == RunStatus.QUEUED))
    )
    if waiting:
        s.execute(
            update(Run)
            .where(Run.id.in_(waiting), Run.status == RunStatus.QUEUED)
            .values(status=RunStatus.SUCCEEDED, finished_at=db_now(s))
            .execution_options(synchronize_session="fetch")
        )
    return waiting


def follow_or_own(s: Session, run_id: str) -> None:
    """Before a failed or cancelled run is queued again (``retry``): who computes its identity now.

    A follower keeps following a run that is live or succeeded; one whose run ended badly becomes a run
    of its own (it no longer depends on that run). A run of its own follows an identical run that is
    live meanwhile (another sweep's), instead of computing it a second time.
    """
    run = get_run(s, run_id)
    if run.reused_run_id is not None:
        followed = get_run(s, run.reused_run_id)
        if followed.status in LIVE_STATUSES or followed.status == RunStatus.SUCCEEDED:
            return
        s.execute(
            delete(RunDependency).where(
                RunDependency.run_id == run.id, RunDependency.depends_on_id == followed.id
            )
        )
        run.reused_run_id = None
        s.flush()
    live = live_run_by_hash(s, run.spec_hash, other_than=run.id)
    if live is not None and run.kind != RunKind.REPORT:
        run.reused_run_id = live.id
        s.add(RunDependency(run_id=run.id, depends_on_id=live.id))
        s.flush()


def settle_follower(s: Session, run_id: str) -> None:
    """After ``retry`` queued a follower: it succeeds at once if the run it follows already has."""
    run = get_run(s, run_id)
    if run.reused_run_id is None or run.status != RunStatus.QUEUED:
        return
    if get_run(s, run.reused_run_id).status == RunStatus.SUCCEEDED:
        _cas(
            s,
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
            .values(status=RunStatus.SUCCEEDED, finished_at=db_now(s)),
        )


def mark_damaged(s: Session, run_id: str, reason: str) -> bool:
    """An executed run that succeeded but whose evidence no longer verifies -> failed, with the reason
    (``orchestrator check --repair``): no submit reuses it, and the next one of its plan runs it again.
    False if it is not such a run (already marked, a follower, not succeeded)."""
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.SUCCEEDED, Run.reused_run_id.is_(None))
        .values(status=RunStatus.FAILED, error=reason)
    )
    return _cas(s, stmt)


def runs_held_by(s: Session, worker_name: str) -> list[Run]:
    stmt = (
        select(Run)
        .where(Run.status == RunStatus.RUNNING, Run.worker == worker_name)
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))


def results_source(s: Session, run: Run) -> Run:
    """The run whose results count for ``run``: itself, or the earlier identical run it reuses."""
    return run if run.results_run_id == run.id else get_run(s, run.results_run_id)
