"""The Celery tasks: thin wrappers that claim a run, call its runner, and record how it ended.

A message carries only a run id. Everything else is re-read from the database, which is the source of
truth: a redelivered message for a finished run does nothing, and claiming is compare-and-set. Each claim
hands this attempt a fencing token; every write it makes carries the token, and the first one refused
(:class:`~storage.errors.LeaseLost`: another attempt took the run over) ends the task at once without
writing anything more. Delivery is at least once; effects are those of exactly one attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import traceback
from typing import Any

from celery import Task, shared_task

from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.config import Settings
from storage.db import Database, get_database
from storage.errors import LeaseLost, NotFound
from storage.models import TERMINAL_STATUSES, RunKind, RunStatus
from worker import shutdown
from worker.context import RunContext, StopReason
from worker.dispatch import dispatch_ready, fail_blocked
from worker.experiments.errors import StopRequested
from worker.heartbeat import RunHeartbeat
from worker.runners import AFTER_SUCCESS, RUNNERS
from worker.specs import TASK_REPORT, TASK_TRAIN, TASK_VISUALIZE

log = logging.getLogger(__name__)


def _settings(task: Task) -> Settings:
    return task.app.conf.convlab_settings


def _device_and_environment(kind: RunKind) -> tuple[str, dict[str, Any]]:
    """What the task process really sees (the accelerator Keras's backend found), not the worker's label,
    and which process on which host executes this attempt (to find it in `ps`, or in a chaos test)."""
    process = {"host": socket.gethostname(), "pid": os.getpid()}
    if kind == RunKind.REPORT:  # no Keras needed: do not pay for importing it
        return "CPU", process
    from worker.device import describe_device, describe_environment

    return describe_device(), {**describe_environment(), **process}


def _wait_for_dependencies(db: Database, run_id: str, kind: RunKind) -> str | None:
    """None when the run may start; else why it cannot start now.

    A training or visualization needs its dependencies to have succeeded; a report only needs them to
    have ended, because a partial sweep is reported, not refused.
    """
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


def _claim(db: Database, settings: Settings, run_id: str, kind: RunKind, worker_name: str) -> tuple | str:
    """(spec, sweep_id, fence) of the run now held by this attempt, or why it is not executed here."""
    try:
        with db.session() as s:
            run = repo.get_run(s, run_id)
            if RunStatus(run.status).is_terminal:
                return f"{run_id} already {run.status}: nothing to do"
    except NotFound:
        log.error("message for unknown run %s dropped", run_id)
        return f"{run_id} unknown"
    blocked = _wait_for_dependencies(db, run_id, kind)
    if blocked:
        return f"{run_id} not started: {blocked}"
    with db.session() as s:
        claimed = repo.claim_run(
            s,
            run_id,
            worker=worker_name,
            device=settings.worker_device or "?",
            lease_seconds=settings.lease_seconds,
        )
        if claimed is None:
            return f"{run_id} is held by another worker, cancelled or finished"
        if claimed.attempts > claimed.max_attempts:
            repo.finish_run(
                s,
                run_id,
                RunStatus.FAILED,
                fence=claimed.fence,
                error=f"gave up after {claimed.max_attempts} attempts (the worker was lost each time)",
            )
            fail_blocked(s)
            return f"{run_id} failed: attempts exhausted"
        return dict(claimed.spec), claimed.sweep_id, claimed.fence


def execute(task: Task, run_id: str, kind: RunKind) -> str:
    settings = _settings(task)
    worker_name = task.request.hostname or socket.gethostname()
    db = get_database(settings)
    try:
        claimed = _claim(db, settings, run_id, kind, worker_name)
    except Exception:
        # The message is acknowledged anyway: let the reaper send the run again instead of losing it.
        with contextlib.suppress(Exception), db.session() as s:
            repo.clear_enqueued(s, run_id)
        raise
    if isinstance(claimed, str):
        return claimed
    spec, sweep_id, fence = claimed

    shutdown.install_child_handler()
    with RunHeartbeat(db, run_id, fence, settings.heartbeat_seconds) as beat:
        ctx = RunContext(
            settings=settings,
            db=db,
            store=ArtifactStore(settings.artifacts_dir),
            run_id=run_id,
            fence=fence,
            spec=spec,
            worker=worker_name,
            heartbeat=beat,
            sweep_id=sweep_id,
        )
        try:
            device, environment = _device_and_environment(kind)
            with db.session() as s:
                repo.record_environment(s, run_id, environment, fence=fence, device=device)
                if kind != RunKind.TRAIN:
                    # Outputs of an earlier attempt that lost the run: this attempt writes its own.
                    repo.clear_artifacts(s, run_id, fence=fence)
            RUNNERS[kind](ctx)
        except LeaseLost:
            log.warning("run %s: attempt %d lost the run; stopped without writing", run_id, fence)
            return f"{run_id} was taken over by another attempt"
        except StopRequested:
            pass  # ctx.stopped_because says why
        except Exception as exc:  # noqa: BLE001 - any failure of the work is recorded on the run
            log.exception("run %s failed", run_id)
            with db.session() as s:
                if repo.finish_run(
                    s,
                    run_id,
                    RunStatus.FAILED,
                    fence=fence,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                ):
                    fail_blocked(s)
            return f"{run_id} failed"
    return _conclude(task, db, ctx, kind)


def _conclude(task: Task, db: Database, ctx: RunContext, kind: RunKind) -> str:
    run_id, reason, fence = ctx.run_id, ctx.stopped_because, ctx.fence
    with db.session() as s:
        if reason == StopReason.LOST:
            return f"{run_id} was taken over by another attempt"
        if reason == StopReason.CANCELLED:
            if repo.finish_run(s, run_id, RunStatus.CANCELLED, fence=fence, error="cancelled by request"):
                fail_blocked(s)
            return f"{run_id} cancelled"
        if reason == StopReason.SHUTDOWN:
            handed_back = repo.hand_back_run(s, run_id, fence=fence)
        elif not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=fence):
            return f"{run_id} was taken over by another attempt"
    if reason is None and kind in AFTER_SUCCESS:
        try:
            AFTER_SUCCESS[kind](ctx)
        except Exception:  # noqa: BLE001 - the run's own artifacts are complete and recorded
            log.exception("run %s succeeded, but publishing its outputs failed", run_id)
    if reason == StopReason.SHUTDOWN:
        if handed_back:
            dispatch_ready(task.app, db, only=[run_id])
        return f"{run_id} handed back to the queue (worker shutting down)"
    dispatch_ready(task.app, db)
    return f"{run_id} succeeded"


@shared_task(name=TASK_TRAIN, bind=True)
def train(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.TRAIN)


@shared_task(name=TASK_VISUALIZE, bind=True)
def visualize(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.VISUALIZE)


@shared_task(name=TASK_REPORT, bind=True)
def report(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.REPORT)
