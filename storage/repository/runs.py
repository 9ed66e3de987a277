"""Runs: creating them, reading them and their dependencies, finding an identical earlier one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import (
    Run,
    RunDependency,
    RunKind,
    RunStatus,
    utcnow,
)


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
    """A new run. ``status=SUCCEEDED`` with ``reused_run_id`` records a run satisfied by an earlier one.
    ``code_identity``: the code ``spec_hash`` was computed for; only a worker running it claims the run."""
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


def find_succeeded_by_hash(s: Session, spec_hash: str) -> Run | None:
    """An earlier succeeded run with the same spec (an executed one rather than a reuse, newest first)."""
    stmt = (
        select(Run)
        .where(Run.spec_hash == spec_hash, Run.status == RunStatus.SUCCEEDED)
        .order_by(Run.reused_run_id.is_not(None), Run.finished_at.desc(), Run.id)
        .limit(1)
    )
    return s.scalars(stmt).first()


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
