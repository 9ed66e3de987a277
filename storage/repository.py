"""Functions over a :class:`~sqlalchemy.orm.Session`. They flush but never commit: the caller owns the
transaction (``with db.session() as s:``).

Fencing: each claim gives the attempt a new token (``runs.fence``); every write made on behalf of the run
(heartbeat, epoch, checkpoint, artifact, environment, finish, hand-back) names it and is refused unless it
is still the run's current token, with the condition in the same UPDATE. Delivery is at least once; the
effects are those of exactly one attempt at a time. Lease times are the database's clock (``clock``).

Every status change is one conditional ``UPDATE ... WHERE status = ...`` (compare-and-set), so two workers,
or a redelivered task, can never move a run backwards: a finished run only leaves its terminal state
through :func:`retry_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.dml import Update

from storage.clock import db_ago, db_now
from storage.errors import IllegalTransition, LeaseLost, NotFound
from storage.models import (
    TERMINAL_STATUSES,
    Artifact,
    ArtifactKind,
    EpochMetric,
    Run,
    RunDependency,
    RunKind,
    RunStatus,
    Sweep,
    Worker,
    utcnow,
)

# ---------------------------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------------------- sweeps, runs


def create_sweep(
    s: Session, *, plan: str, profile: str, overrides: dict[str, Any], code_version: str
) -> Sweep:
    sweep = Sweep(plan=plan, profile=profile, overrides=dict(overrides), code_version=code_version)
    s.add(sweep)
    s.flush()
    return sweep


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
) -> Run:
    """A new run. ``status=SUCCEEDED`` with ``reused_run_id`` records a run satisfied by an earlier one."""
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


def get_run(s: Session, run_id: str) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise NotFound("run", run_id)
    return run


def get_sweep(s: Session, sweep_id: str) -> Sweep:
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound("sweep", sweep_id)
    return sweep


def latest_sweep(s: Session) -> Sweep | None:
    return s.scalars(select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(1)).first()


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


def record_environment(
    s: Session, run_id: str, environment: dict[str, Any], *, fence: int, device: str | None = None
) -> None:
    """What the run executes on and with (device; Keras version, backend, ...), for status and provenance."""
    values: dict[str, Any] = {"environment": environment}
    if device is not None:
        values["device"] = device
    _fenced(s, run_id, fence, **values)


def clear_enqueued(s: Session, run_id: str) -> None:
    """Forget that a queued run was sent: it is sent again once it is ready (its message was consumed)."""
    _cas(
        s,
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(enqueued_at=None, received_at=None, received_by=None),
    )


def mark_enqueued(s: Session, run_id: str) -> None:
    """Record that a task message for this run was sent (so the monitor does not send another)."""
    if not _cas(
        s,
        update(Run).where(Run.id == run_id).values(enqueued_at=db_now(s), received_at=None, received_by=None),
    ):
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


# ------------------------------------------------------------------------------------------ transitions


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
    return _cas(s, stmt)


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
    """failed/cancelled -> queued with a fresh attempt budget; anything else raises IllegalTransition."""
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


# --------------------------------------------------------------------------------------------- scanning


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
        .where(Run.status == RunStatus.QUEUED, Run.enqueued_at.is_(None), ~unmet)
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


# ------------------------------------------------------------------------------------- epochs, artifacts


def record_epoch(
    s: Session,
    run_id: str,
    *,
    fence: int,
    epoch: int,
    phase: str,
    loss: float,
    accuracy: float,
    val_loss: float | None,
    val_accuracy: float | None,
    lr: float,
    seconds: float,
    images_per_second: float,
    checkpoint: str | None = None,
) -> None:
    """Insert or overwrite the metrics of one epoch, advance ``run.last_epoch`` (never backwards),
    refresh the heartbeat and, with ``checkpoint``, commit the checkpoint state file the epoch ended in.

    Refused with :class:`LeaseLost` unless attempt ``fence`` holds the run: a paused attempt that lost
    its run cannot overwrite the winner's epochs or point the run at its own checkpoint.
    """
    values: dict[str, Any] = {"last_epoch": case((Run.last_epoch < epoch, epoch), else_=Run.last_epoch)}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    _fenced(s, run_id, fence, **values)
    row = {
        "phase": phase,
        "loss": float(loss),
        "accuracy": float(accuracy),
        "val_loss": None if val_loss is None else float(val_loss),
        "val_accuracy": None if val_accuracy is None else float(val_accuracy),
        "lr": float(lr),
        "seconds": float(seconds),
        "images_per_second": float(images_per_second),
        "recorded_at": utcnow(),
    }
    stmt = _insert(s, EpochMetric).values(run_id=run_id, epoch=int(epoch), **row)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "epoch"], set_=row)
    s.execute(stmt)


def add_artifact(
    s: Session, run_id: str, *, fence: int, kind: ArtifactKind, path: str, sha256: str, size: int
) -> Artifact:
    """Record a stored file of attempt ``fence`` (:class:`LeaseLost` unless it holds the run); writing
    the same path again replaces the record."""
    _fenced(s, run_id, fence)
    values = {"kind": ArtifactKind(kind), "sha256": sha256, "bytes": int(size), "created_at": utcnow()}
    stmt = _insert(s, Artifact).values(run_id=run_id, path=path, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["run_id", "path"], set_=values))
    artifact = s.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.path == path)
        .execution_options(populate_existing=True)
    ).one()
    return artifact


def clear_artifacts(s: Session, run_id: str, *, fence: int) -> None:
    """Forget every file recorded for the run (attempt ``fence`` starts its outputs afresh)."""
    _fenced(s, run_id, fence)
    s.execute(delete(Artifact).where(Artifact.run_id == run_id))


def commit_checkpoint_files(
    s: Session, run_id: str, *, fence: int, files: Sequence[tuple[str, str, int]]
) -> None:
    """Record ``files`` (path, sha256, size) as the run's checkpoint artifacts, replacing the records of
    every older checkpoint (which its writer prunes once this commits). Fenced like every write."""
    _fenced(s, run_id, fence)
    keep = [path for path, _, _ in files]
    s.execute(
        delete(Artifact).where(
            Artifact.run_id == run_id, Artifact.kind == ArtifactKind.CHECKPOINT, Artifact.path.not_in(keep)
        )
    )
    for path, sha256, size in files:
        add_artifact(
            s, run_id, fence=fence, kind=ArtifactKind.CHECKPOINT, path=path, sha256=sha256, size=size
        )


def artifact_at(s: Session, run_id: str, path: str) -> Artifact | None:
    return s.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.path == path)).first()


def artifacts_of(s: Session, run_id: str) -> list[Artifact]:
    return list(s.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.path)))


def metric_history(s: Session, run_id: str) -> list[EpochMetric]:
    return list(
        s.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch))
    )


# ----------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class RunSummary:
    """One row of a status table: the run plus its latest epoch's metrics."""

    id: str
    kind: RunKind
    label: str
    status: RunStatus
    attempts: int
    max_attempts: int
    total_epochs: int
    last_epoch: int
    worker: str | None
    device: str | None
    reused_run_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    error: str | None
    spec: dict[str, Any]
    seed: int
    sweep_id: str | None = None
    progress: dict[str, Any] | None = None
    traceback: str | None = None
    val_accuracy: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    val_loss: float | None = None
    seconds_per_epoch: float | None = None
    images_per_second: float | None = None


def sweep_runs(s: Session, sweep_id: str) -> list[RunSummary]:
    """Every run of a sweep with its latest metrics, in creation order: two queries, whatever the size."""
    runs = list(s.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.created_at, Run.id)))
    return _summaries(s, runs)


def run_summary(s: Session, run_id: str) -> RunSummary:
    """One run as :func:`sweep_runs` describes it (``NotFound`` if there is none)."""
    return _summaries(s, [get_run(s, run_id)])[0]


def _summaries(s: Session, runs: list[Run]) -> list[RunSummary]:
    if not runs:
        return []
    ids = [run.id for run in runs]
    per_run = (
        select(
            EpochMetric.run_id.label("run_id"),
            func.max(EpochMetric.epoch).label("epoch"),
            func.avg(EpochMetric.seconds).label("mean_seconds"),
        )
        .where(EpochMetric.run_id.in_(ids))
        .group_by(EpochMetric.run_id)
        .subquery()
    )
    latest = select(EpochMetric, per_run.c.mean_seconds).join(
        per_run, and_(EpochMetric.run_id == per_run.c.run_id, EpochMetric.epoch == per_run.c.epoch)
    )
    metrics: dict[str, tuple[EpochMetric, float]] = {m.run_id: (m, mean) for m, mean in s.execute(latest)}
    out = []
    for run in runs:
        found = metrics.get(run.id)
        extra: dict[str, Any] = {}
        if found is not None:
            m, mean = found
            extra = {
                "val_accuracy": m.val_accuracy,
                "accuracy": m.accuracy,
                "loss": m.loss,
                "val_loss": m.val_loss,
                "seconds_per_epoch": None if mean is None else float(mean),
                "images_per_second": m.images_per_second,
            }
        out.append(
            RunSummary(
                id=run.id,
                kind=run.kind,
                label=run.label,
                status=run.status,
                attempts=run.attempts,
                max_attempts=run.max_attempts,
                total_epochs=run.total_epochs,
                last_epoch=run.last_epoch,
                worker=run.worker,
                device=run.device,
                reused_run_id=run.reused_run_id,
                cancel_requested=run.cancel_requested,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
                heartbeat_at=run.heartbeat_at,
                error=run.error,
                spec=run.spec,
                seed=run.seed,
                sweep_id=run.sweep_id,
                traceback=run.traceback,
                progress=run.progress,
                **extra,
            )
        )
    return out


def find_succeeded_by_hash(s: Session, spec_hash: str) -> Run | None:
    """An earlier succeeded run with the same spec (an executed one rather than a reuse, newest first)."""
    stmt = (
        select(Run)
        .where(Run.spec_hash == spec_hash, Run.status == RunStatus.SUCCEEDED)
        .order_by(Run.reused_run_id.is_not(None), Run.finished_at.desc(), Run.id)
        .limit(1)
    )
    return s.scalars(stmt).first()


# ----------------------------------------------------------------------------------------------- workers


def upsert_worker(s: Session, *, name: str, host: str, pid: int, device: str, slots: int) -> Worker:
    now = db_now(s)
    values = {
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


def live_workers(s: Session, *, within_seconds: float) -> list[Worker]:
    stmt = (
        select(Worker)
        .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= db_ago(s, within_seconds))
        .order_by(Worker.name)
    )
    return list(s.scalars(stmt))


def runs_held_by(s: Session, worker_name: str) -> list[Run]:
    stmt = (
        select(Run)
        .where(Run.status == RunStatus.RUNNING, Run.worker == worker_name)
        .order_by(Run.created_at, Run.id)
    )
    return list(s.scalars(stmt))
