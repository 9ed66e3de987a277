"""Putting runs on the queue. Used by the orchestrator (submit, retry) and by workers (dependents, reaper).

A message carries one run id and nothing else; the database says what the run is. The message is sent
first and ``enqueued_at`` recorded after, so a crash in between can only cause a duplicate message
(harmless: claiming a run is compare-and-set), never a run that nobody will ever send. No database
transaction is held open while the broker is spoken to: a slow broker must never hold SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from sqlalchemy.orm import Session

from contract.specs import TASK_REPORT, TASK_TRAIN, TASK_VISUALIZE
from storage import repository as repo
from storage.db import Database
from storage.models import RunKind
from worker.app import QUEUE

TASK_FOR_KIND = {RunKind.TRAIN: TASK_TRAIN, RunKind.VISUALIZE: TASK_VISUALIZE, RunKind.REPORT: TASK_REPORT}


def send_run(app: Celery, run_id: str, kind: RunKind | str) -> None:
    app.send_task(TASK_FOR_KIND[RunKind(kind)], args=[run_id], queue=QUEUE)


def dispatch_ready(
    app: Celery, db: Database, only: Iterable[str] | None = None, *, code: str | None = None
) -> list[str]:
    """Send every queued run whose dependencies are done and that no message carries yet (or ``only``
    those of them), then record that they were sent. ``code``: only runs submitted for that code (or
    for none recorded): a worker's reaper sends only what it may claim (``worker.code``)."""
    with db.session(readonly=True) as s:
        ready = [
            (run.id, run.kind)
            for run in repo.ready_unenqueued_runs(s)
            if code is None or run.code_identity in (None, code)
        ]
    if only is not None:
        wanted = set(only)
        ready = [(run_id, kind) for run_id, kind in ready if run_id in wanted]
    for run_id, kind in ready:
        send_run(app, run_id, kind)
    if ready:
        with db.session() as s:
            for run_id, _ in ready:
                repo.mark_enqueued(s, run_id)
    return [run_id for run_id, _ in ready]


def fail_blocked(session: Session) -> list[str]:
    """Fail queued runs whose dependency failed or was cancelled, naming it; repeat down the chain."""
    failed: list[str] = []
    while True:
        blocked = repo.runs_blocked_by_failure(session)
        if not blocked:
            return failed
        for run, dependency in blocked:
            reason = f"dependency {dependency.id} ({dependency.label}) {dependency.status}"
            if dependency.error:
                reason += f": {dependency.error.splitlines()[0][:300]}"
            if repo.fail_run(session, run.id, reason):
                failed.append(run.id)
        session.flush()
