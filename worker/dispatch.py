"""Putting runs on the queue. Used by the orchestrator (submit, retry) and by workers (dependents, reaper).

A message carries one run id and nothing else; the database says what the run is. The message is sent
first and ``enqueued_at`` recorded after, so a crash in between can only cause a duplicate message
(harmless: claiming a run is compare-and-set), never a run that nobody will ever send.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from sqlalchemy.orm import Session

from storage import repository as repo
from storage.models import Run, RunKind
from worker.app import QUEUE
from worker.specs import TASK_REPORT, TASK_TRAIN, TASK_VISUALIZE

TASK_FOR_KIND = {RunKind.TRAIN: TASK_TRAIN, RunKind.VISUALIZE: TASK_VISUALIZE, RunKind.REPORT: TASK_REPORT}


def send_run(app: Celery, run: Run) -> None:
    app.send_task(TASK_FOR_KIND[RunKind(run.kind)], args=[run.id], queue=QUEUE)


def dispatch_ready(app: Celery, session: Session, runs: Iterable[Run] | None = None) -> list[str]:
    """Send every queued run whose dependencies all succeeded and that was not sent yet."""
    ready = list(runs) if runs is not None else repo.ready_unenqueued_runs(session)
    sent = []
    for run in ready:
        send_run(app, run)
        repo.mark_enqueued(session, run.id)
        sent.append(run.id)
    return sent


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
