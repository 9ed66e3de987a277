"""Worker-process signals: the worker's own heartbeat row, the reaper timer, and the shutdown flag.

Task processes are forked from this one; they never reuse its database connections because
``storage.db`` caches engines per process id.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from storage import repository as repo
from storage.db import get_database
from worker import shutdown
from worker.reaper import reap

log = logging.getLogger(__name__)
_stop = threading.Event()


def _maintenance_loop(app: Any, name: str) -> None:
    settings = app.conf.convlab_settings
    db = get_database(settings)
    # Often enough that a lost run is noticed soon after its lease ends.
    interval = max(0.5, min(settings.heartbeat_seconds, settings.lease_seconds / 3))
    while not _stop.wait(interval):
        try:
            with db.session() as s:
                repo.touch_worker(s, name)
            report = reap(app, db, lease_seconds=settings.lease_seconds)
            if report.requeued or report.failed:
                log.warning("reaper: requeued %s, failed %s", report.requeued, report.failed)
        except Exception:  # noqa: BLE001 - keep reaping through database or broker hiccups
            log.warning("maintenance pass failed; retrying", exc_info=True)


@worker_ready.connect
def _on_ready(sender: Any, **_: Any) -> None:
    app = sender.app
    settings = app.conf.convlab_settings
    shutdown.clear_stop(settings)
    name = sender.hostname
    db = get_database(settings)
    db.ensure_schema()
    with db.session() as s:
        repo.upsert_worker(
            s,
            name=name,
            host=socket.gethostname(),
            pid=os.getpid(),
            device=settings.worker_device or "CPU",
            slots=settings.worker_slots,
        )
    threading.Thread(
        target=_maintenance_loop, args=(app, name), name="convlab-maintenance", daemon=True
    ).start()


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    from worker.app import default_app

    shutdown.request_stop(default_app().conf.convlab_settings)


@worker_shutdown.connect
def _on_shutdown(sender: Any, **_: Any) -> None:
    _stop.set()
    settings = sender.app.conf.convlab_settings
    shutdown.clear_stop(settings)
    try:
        with get_database(settings).session() as s:
            repo.stop_worker(s, sender.hostname)
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.warning("could not mark worker stopped", exc_info=True)
