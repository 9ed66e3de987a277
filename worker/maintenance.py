"""The worker's maintenance process: its liveness row and the reaper, on a timer; and, for a local
worker, the watch on the ``submit`` that owns it (:mod:`worker.owner`).

It runs in its own spawned process, not as a thread of Celery's main process, because that process forks
a task process for every task: SQLite keeps its lock bookkeeping per process, so a fork taken while a
thread is inside a write transaction leaves the child believing the database is locked (SQLite's
documented fork hazard). The spawned process shares nothing with the forks. It exits when its parent,
the Celery main process, is gone (even after a SIGKILL), so a dead worker never looks alive.
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery

from contract.settings import Settings
from storage import repository as repo
from storage.db import Database, get_database
from storage.models import RunStatus
from worker.code import STALE, sending_code
from worker.owner import Owner, kill_own_group, owner_from_env

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.25  # how often the parent and the owner are looked at: an orphan ends within this


def run_maintenance(settings: Settings, worker_name: str, parent_pid: int) -> None:
    """Entry point of the spawned process: loop until the parent worker process is gone."""
    from worker.app import create_app

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/Maintenance] %(message)s")
    app = create_app(settings)
    # The schema is checked inside each pass: a database down at this moment must not end the process.
    db = get_database(settings, ensure_schema=False)
    owner = owner_from_env()
    interval = settings.maintenance_seconds
    loaded: list[str | None] = []  # the code the worker's main process hashed, once the database said it
    next_pass = 0.0
    while True:
        parent_gone = os.getppid() != parent_pid
        if owner is not None and not owner.alive():
            abandon(db, settings, worker_name, owner)
            return
        if parent_gone:
            return  # a worker nobody owns, or one whose owner is stopping it: the owner cleans up
        if time.monotonic() >= next_pass:
            next_pass = time.monotonic() + interval
            _maintenance_pass(app, db, settings, worker_name, loaded)
        time.sleep(WATCH_SECONDS)


def _maintenance_pass(
    app: Celery, db: Database, settings: Settings, worker_name: str, loaded: list[str | None]
) -> None:
    from worker.reaper import reap

    try:
        db.ensure_schema()
        with db.session() as s:
            repo.touch_worker(s, worker_name)
            if not loaded:
                row = repo.get_worker(s, worker_name)
                loaded.append(row.code_identity if row is not None else None)
        code = sending_code(loaded[0])
        if code == STALE:
            log.warning("this worker's source changed on disk since it started: it runs nothing; restart it")
        report = reap(
            app, db, lease_seconds=settings.lease_seconds, resend_seconds=settings.resend_seconds, code=code
        )
        if report.requeued or report.failed or report.cancelled or report.resent:
            log.warning(
                "reaper: requeued %s, failed %s, cancelled %s, re-sent %s",
                report.requeued,
                report.failed,
                report.cancelled,
                report.resent,
            )
    except Exception:  # noqa: BLE001 - keep reaping through database or broker hiccups
        log.warning("maintenance pass failed; retrying", exc_info=True)


def abandon(db: Database, settings: Settings, worker_name: str, owner: Owner) -> None:
    """The ``submit`` that started this local worker is gone: do what its Ctrl-C would have done.

    Every other process of the worker is killed (a training loses the epoch it was in, never its
    checkpoint), then its runs are handed back and the unfinished runs of the owner's sweep cancelled,
    so that no later worker runs them unasked; ``orchestrator retry SWEEP`` resumes them.
    """
    log.error("the process that started this worker (pid %d) is gone: stopping the worker", owner.pid)
    kill_own_group()
    try:
        with db.session() as s:
            released = repo.release_worker_runs(s, worker_name)
            repo.stop_worker(s, worker_name)
            cancelled = []
            if owner.sweep_id:
                for run in repo.sweep_runs(s, owner.sweep_id):
                    if not run.status.is_terminal:
                        status = repo.request_cancel(s, run.id, lease_seconds=settings.lease_seconds)
                        if status == RunStatus.CANCELLED:
                            cancelled.append(run.id)
        log.error(
            "handed back %s; cancelled %s; resume with `orchestrator retry %s`",
            released,
            cancelled,
            owner.sweep_id,
        )
    except Exception:  # noqa: BLE001 - the runs are then recovered by any reaper once the lease ends
        log.exception("could not hand back the runs of %s; the reaper will, after the lease", worker_name)
