"""The Celery tasks: thin wrappers around one attempt (:mod:`worker.attempt`) plus what needs the broker.

A message carries only a run id. Everything else is re-read from the database, which is the source of
truth: a redelivered message for a finished run does nothing, and claiming is compare-and-set. Each claim
hands the attempt a fencing token; every write it makes carries the token, and the first one refused
(another attempt took the run over) ends the task at once without writing anything more. Delivery is at
least once; effects are those of exactly one attempt.
"""

from __future__ import annotations

import socket
from typing import Any

from celery import Task, shared_task

from contract.specs import TASK_REPORT, TASK_TRAIN, TASK_VISUALIZE
from storage.db import get_database
from storage.models import RunKind
from worker import shutdown
from worker.attempt import End, run_attempt
from worker.dispatch import dispatch_ready
from worker.runners import AFTER_SUCCESS, RUNNERS

# After these ends, what waited for the run may be ready (a report waits for its dependencies to end).
_SEND_READY = {End.SUCCEEDED, End.FAILED, End.CANCELLED}


def execute(task: Task, run_id: str, kind: RunKind) -> str:
    settings = task.app.conf.convlab_settings
    db = get_database(settings)
    worker = task.request.hostname or socket.gethostname()
    shutdown.install_child_handler()  # this task process: SIGTERM means "stop at the next epoch"
    outcome = run_attempt(
        db, settings, run_id, kind, worker, RUNNERS[kind], after_success=AFTER_SUCCESS.get(kind)
    )
    if outcome.end == End.HANDED_BACK:
        dispatch_ready(task.app, db, only=[run_id])
    elif outcome.end in _SEND_READY:
        dispatch_ready(task.app, db)
    return outcome.message


@shared_task(name=TASK_TRAIN, bind=True)
def train(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.TRAIN)


@shared_task(name=TASK_VISUALIZE, bind=True)
def visualize(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.VISUALIZE)


@shared_task(name=TASK_REPORT, bind=True)
def report(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.REPORT)
