"""One attempt at a run, from claim to recorded end: the run's state machine as the worker drives it.

No Celery here: :func:`run_attempt` takes the run's body as a plain callable, so every transition is
unit-tested on the real storage (SQLite and PostgreSQL) with stub bodies, and the Celery tasks stay thin
wrappers that add only what needs the broker (sending what became ready).

The rules, in order:

- an unknown or finished run: nothing to do (a redelivered message);
- a training or visualization whose dependency failed or was cancelled fails with the reason; one whose
  dependencies have not ended yet is not started (its message is forgotten; the run is sent again when
  they end); a report waits for its dependencies to end, not to succeed;
- the claim is compare-and-set and hands the attempt a fencing token; an attempt beyond the run's cap
  fails it;
- the body runs with a heartbeat; it ends normally (succeeded), or after ``should_stop`` said why
  (cancelled: the run is cancelled; shutdown: the run is handed back, the attempt refunded), or raises
  (the run fails with the error), or finds a write refused (another attempt holds the run: nothing more
  is written, not even the end), or loses the database (a restart, a failover, a terminated session:
  the error is the database's, not the work's, so the run is not failed; the attempt stops, its
  heartbeat with it, and the lease hands the run to the next attempt, which resumes the last commit).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc

from contract.settings import Settings
from storage import repository as repo
from storage.db import Database
from storage.errors import LeaseLost, NotFound
from storage.models import TERMINAL_STATUSES, RunKind, RunStatus
from storage.stores import open_store
from worker.code import claim_refusal
from worker.context import RunContext, StopReason
from worker.dispatch import fail_blocked
from worker.experiments.errors import StopRequested
from worker.heartbeat import RunHeartbeat
from worker.warm import tasks_run

log = logging.getLogger(__name__)

Body = Callable[[RunContext], None]


class End(enum.StrEnum):
    NOT_STARTED = "not started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HANDED_BACK = "handed back"
    LOST = "lost"  # another attempt holds the run now
    LEFT_TO_LEASE = "left to the lease"  # the database was lost mid-attempt: the lease recovers the run


class NotClaimed(Exception):
    """The run could not be claimed, and the database could not be told that its message is gone (it
    is unreachable): the caller must give the message back to the broker, not acknowledge it, or the
    run stays ``queued`` with a message that no longer exists."""

    def __init__(self, run_id: str, cause: BaseException) -> None:
        super().__init__(f"{run_id} not claimed: {type(cause).__name__}: {cause}")
        self.run_id = run_id


@dataclass(frozen=True)
class Outcome:
    end: End
    message: str


@dataclass(frozen=True)
class _Claimed:
    spec: dict[str, Any]
    sweep_id: str | None
    fence: int


def database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or dropped the session (not that a
    statement was wrong): an operational error, a closed connection, or one the driver invalidated."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def _device_and_environment(kind: RunKind, settings: Settings) -> tuple[str, dict[str, Any]]:
    """What the task process really sees (the accelerator Keras's backend found), not the worker's label,
    and which process on which host executes this attempt (to find it in `ps`, or in a chaos test).

    Turns the persistent compilation cache on first: this is where the task process imports Keras."""
    # The process's how-many-th task this is: 1 in a fresh task process, more in a warm one (worker.warm).
    process = {"host": socket.gethostname(), "pid": os.getpid(), "task_in_process": tasks_run() + 1}
    if kind == RunKind.REPORT:  # no Keras needed: do not pay for importing it
        return "CPU", process
    from worker.compile_cache import enable_compile_cache

    compile_cache = enable_compile_cache(settings.compile_cache_dir)
    from worker.device import describe_device, describe_environment

    environment = {**describe_environment(compile_cache), **process}
    if kind == RunKind.TRAIN:
        from worker.experiments.device_loop import describe_loop

        environment["train_loop"] = describe_loop(settings.train_loop)
    return describe_device(), environment


def _blocked_by_dependencies(db: Database, run_id: str, kind: RunKind) -> str | None:
    """None when the run may start; else why it cannot start now."""
    with db.session() as s:
        dependencies = repo.dependencies_of(s, run_id)
        if kind != RunKind.REPORT and any(
            d.status in (RunStatus.FAILED, RunStatus.CANCELLED) for d in dependencies
        ):
            fail_blocked(s)
            return "a dependency failed"
        done = TERMINAL_STATUSES if kind == RunKind.REPORT else {RunStatus.SUCCEEDED}
        pending = [d.id for d in dependencies if d.status not in done]
        if pending:
            # Do not hold a worker: forget the message; the run is sent again when its dependencies end.
            repo.clear_enqueued(s, run_id)
            return f"waiting for {', '.join(pending)}"
    return None


def claim(db: Database, settings: Settings, run_id: str, kind: RunKind, worker: str) -> _Claimed | Outcome:
    """The run, now held by this attempt; or the outcome that says why it is not executed here."""
    try:
        with db.session() as s:
            run = repo.get_run(s, run_id)
            if RunStatus(run.status).is_terminal:
                return Outcome(End.NOT_STARTED, f"{run_id} already {run.status}: nothing to do")
            if (refused := claim_refusal(run.code_identity)) is not None:
                repo.clear_enqueued(s, run_id)  # forgotten: a worker of the run's code sends it (worker.code)
                log.warning("run %s not claimed: %s", run_id, refused)
                return Outcome(End.NOT_STARTED, f"{run_id} not started: {refused}")
    except NotFound:
        log.error("message for unknown run %s dropped", run_id)
        return Outcome(End.NOT_STARTED, f"{run_id} unknown")
    blocked = _blocked_by_dependencies(db, run_id, kind)
    if blocked:
        return Outcome(End.NOT_STARTED, f"{run_id} not started: {blocked}")
    with db.session() as s:
        claimed = repo.claim_run(
            s,
            run_id,
            worker=worker,
            device=settings.worker_device or "?",
            lease_seconds=settings.lease_seconds,
        )
        if claimed is None:
            return Outcome(End.NOT_STARTED, f"{run_id} is held by another worker, cancelled or finished")
        if claimed.attempts > claimed.max_attempts:
            error = f"gave up after {claimed.max_attempts} attempts (the worker was lost each time)"
            repo.finish_run(s, run_id, RunStatus.FAILED, fence=claimed.fence, error=error)
            fail_blocked(s)
            return Outcome(End.FAILED, f"{run_id} failed: attempts exhausted")
        return _Claimed(dict(claimed.spec), claimed.sweep_id, claimed.fence)


def run_attempt(
    db: Database,
    settings: Settings,
    run_id: str,
    kind: RunKind,
    worker: str,
    body: Body,
    *,
    after_success: Body | None = None,
) -> Outcome:
    """Claim ``run_id``, run ``body`` under a heartbeat, record how it ended. ``after_success`` runs once
    the success is recorded (never for an attempt whose end was refused)."""
    try:
        claimed = claim(db, settings, run_id, kind, worker)
    except Exception as exc:
        # Acknowledging the message is safe only once the database says it is gone: the reaper then
        # sends the run again. Where the database cannot even be told, the message must stay.
        try:
            with db.session() as s:
                repo.clear_enqueued(s, run_id)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not forget the message of %s", run_id, exc_info=True)
            raise NotClaimed(run_id, exc) from exc
        raise
    if isinstance(claimed, Outcome):
        return claimed
    store = open_store(settings)
    try:
        with RunHeartbeat(db, run_id, claimed.fence, settings.heartbeat_seconds) as beat:
            ctx = RunContext(
                settings=settings,
                db=db,
                store=store,
                run_id=run_id,
                fence=claimed.fence,
                spec=claimed.spec,
                worker=worker,
                heartbeat=beat,
                sweep_id=claimed.sweep_id,
            )
            try:
                device, environment = _device_and_environment(kind, settings)
                with db.session() as s:
                    repo.record_environment(s, run_id, environment, fence=claimed.fence, device=device)
                    if kind != RunKind.TRAIN:
                        # Outputs of an earlier attempt that lost the run: this attempt writes its own.
                        repo.clear_artifacts(s, run_id, fence=claimed.fence)
                body(ctx)
            except LeaseLost:
                log.warning("run %s: attempt %d lost the run; stopped without writing", run_id, claimed.fence)
                return Outcome(End.LOST, f"{run_id} was taken over by another attempt")
            except StopRequested:
                pass  # ctx.stopped_because says why
            except Exception as exc:  # noqa: BLE001 - any failure of the work is recorded on the run
                if database_lost(exc):
                    log.warning(
                        "run %s: attempt %d lost the database (%s); left to the lease",
                        run_id,
                        claimed.fence,
                        type(exc).__name__,
                    )
                    return Outcome(End.LEFT_TO_LEASE, f"{run_id} lost the database; the lease recovers it")
                log.exception("run %s failed", run_id)
                with db.session() as s:
                    error, tb = f"{type(exc).__name__}: {exc}", traceback.format_exc()
                    if not repo.finish_run(
                        s, run_id, RunStatus.FAILED, fence=claimed.fence, error=error, traceback=tb
                    ):
                        return Outcome(End.LOST, f"{run_id} was taken over by another attempt")
                    fail_blocked(s)
                return Outcome(End.FAILED, f"{run_id} failed")
        outcome = conclude(db, ctx)
        if outcome.end == End.SUCCEEDED and after_success is not None:
            try:
                after_success(ctx)
            except Exception:  # noqa: BLE001 - the run's own artifacts are complete and recorded
                log.exception("run %s succeeded, but publishing its outputs failed", run_id)
        return outcome
    finally:
        # An object store's local scratch copies (checkpoints, figures) are stored or abandoned now.
        store.discard_scratch(store.attempt_dir(run_id, claimed.fence))


def conclude(db: Database, ctx: RunContext) -> Outcome:
    """Record how a body that returned ended, as ``ctx.stopped_because`` says (fenced)."""
    run_id, reason, fence = ctx.run_id, ctx.stopped_because, ctx.fence
    lost = Outcome(End.LOST, f"{run_id} was taken over by another attempt")
    with db.session() as s:
        if reason == StopReason.LOST:
            return lost
        if reason == StopReason.CANCELLED:
            if not repo.finish_run(s, run_id, RunStatus.CANCELLED, fence=fence, error="cancelled by request"):
                return lost
            fail_blocked(s)
            return Outcome(End.CANCELLED, f"{run_id} cancelled")
        if reason == StopReason.SHUTDOWN:
            if not repo.hand_back_run(s, run_id, fence=fence):
                return lost
            return Outcome(End.HANDED_BACK, f"{run_id} handed back to the queue (worker shutting down)")
        if not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=fence):
            return lost
    return Outcome(End.SUCCEEDED, f"{run_id} succeeded")
