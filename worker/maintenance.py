"""The worker's maintenance process: its liveness row and the reaper, on a timer.

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

from contract.settings import Settings
from storage import repository as repo
from storage.db import get_database

log = logging.getLogger(__name__)


def run_maintenance(settings: Settings, worker_name: str, parent_pid: int) -> None:
    """Entry point of the spawned process: loop until the parent worker process is gone."""
    from worker.app import create_app
    from worker.reaper import reap

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/Maintenance] %(message)s")
    app = create_app(settings)
    # The schema is checked inside the loop: a database down at this moment must not end the process.
    db = get_database(settings, ensure_schema=False)
    interval = settings.maintenance_seconds
    while os.getppid() == parent_pid:
        try:
            db.ensure_schema()
            with db.session() as s:
                repo.touch_worker(s, worker_name)
            report = reap(
                app, db, lease_seconds=settings.lease_seconds, resend_seconds=settings.resend_seconds
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
        time.sleep(interval)
