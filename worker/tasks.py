"""The Celery tasks: thin wrappers around one attempt (:mod:`worker.attempt`) plus what needs the broker.

A message carries only a run id. Everything else is re-read from the database, which is the source of
truth: a redelivered message for a finished run does nothing, and claiming is compare-and-set. Each claim
hands the attempt a fencing token; every write it makes carries the token, and the first one refused
(another attempt took the run over) ends the task at once without writing anything more. Delivery is at
least once; effects are those of exactly one attempt. A message is acknowledged only once the run was
claimed or the database knows the message is gone: while the database cannot be reached before the
claim, the message stays with the broker.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject

from contract.settings import Settings
from contract.specs import TASK_REPORT, TASK_TRAIN, TASK_VISUALIZE
from storage.db import Database, get_database
from storage.errors import DatabaseUnavailable
from storage.models import RunKind
from worker import shutdown
from worker.attempt import End, NotClaimed, Outcome, run_attempt
from worker.dispatch import dispatch_ready
from worker.runners import AFTER_SUCCESS, RUNNERS
from worker.warm import TaskScope

log = logging.getLogger(__name__)

# Pauses between tries to reach a database that is down before the claim (see _attempt_through_outages).
_FIRST_PAUSE_S = 0.5
_MAX_PAUSE_S = 8.0

# After these ends, what waited for the run may be ready (a report waits for its dependencies to end).
_SEND_READY = {End.SUCCEEDED, End.FAILED, End.CANCELLED}


def execute(task: Task, run_id: str, kind: RunKind) -> str:
    settings = task.app.conf.convlab_settings
    worker = task.request.hostname or socket.gethostname()
    # One task of a warm process: SIGTERM means "stop at the next epoch"; afterwards the process is reset
    # for the next task, or recycled (see worker.warm).
    with TaskScope(settings, run_id) as scope:
        db, outcome = _attempt_through_outages(settings, run_id, kind, worker)
        scope.ended(outcome.end.value)
        if outcome.end == End.HANDED_BACK:
            dispatch_ready(task.app, db, only=[run_id])
        elif outcome.end in _SEND_READY:
            dispatch_ready(task.app, db)
        return outcome.message


def _attempt_through_outages(
    settings: Settings, run_id: str, kind: RunKind, worker: str
) -> tuple[Database, Outcome]:
    """:func:`run_attempt`, riding out a database that cannot be reached before the claim.

    Tried again after 0.5 s, 1 s, 2 s ... (at most :data:`_MAX_PAUSE_S` apart) for up to one lease; then
    the message is given back to the broker (rejected with requeue: the next delivery starts over in a
    fresh process), never acknowledged as done, so the run is not stranded ``queued`` with no message.
    The pauses bound how often one message can cost a process start: about once a lease. A worker
    shutting down gives the message back at once.
    """
    deadline = time.monotonic() + settings.lease_seconds
    pause = _FIRST_PAUSE_S
    while True:
        try:
            try:
                db = get_database(settings)  # checks the schema: the first query of this process
            except DatabaseUnavailable as exc:
                raise NotClaimed(run_id, exc) from exc
            return db, run_attempt(
                db, settings, run_id, kind, worker, RUNNERS[kind], after_success=AFTER_SUCCESS.get(kind)
            )
        except NotClaimed as exc:
            if time.monotonic() + pause > deadline or shutdown.stop_requested(settings):
                log.warning("%s; giving its message back to the broker", exc)
                raise Reject(str(exc), requeue=True) from exc
            log.warning("%s; trying again in %.1f s", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)


@shared_task(name=TASK_TRAIN, bind=True)
def train(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.TRAIN)


@shared_task(name=TASK_VISUALIZE, bind=True)
def visualize(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.VISUALIZE)


@shared_task(name=TASK_REPORT, bind=True)
def report(self: Task, run_id: str) -> Any:
    return execute(self, run_id, RunKind.REPORT)
