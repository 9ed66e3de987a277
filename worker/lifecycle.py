"""Worker-process signals: register the worker, start its maintenance process, flag a shutdown.

Task processes are forked from this one. Its database work happens only here, in the main thread that
also forks (never concurrently with a fork), and task processes never reuse its connections because
``storage.db`` caches engines per process id. The timer work runs in ``worker.maintenance``.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import socket
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from storage import repository as repo
from storage.db import get_database
from worker import shutdown
from worker.maintenance import run_maintenance

log = logging.getLogger(__name__)
_maintenance: list[multiprocessing.process.BaseProcess] = []


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
    process = multiprocessing.get_context("spawn").Process(
        target=run_maintenance, args=(settings, name, os.getpid()), name="convlab-maintenance", daemon=True
    )
    process.start()
    _maintenance.append(process)


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    from worker.app import default_app

    shutdown.request_stop(default_app().conf.convlab_settings)


@worker_shutdown.connect
def _on_shutdown(sender: Any, **_: Any) -> None:
    for process in _maintenance:
        process.terminate()
    settings = sender.app.conf.convlab_settings
    shutdown.clear_stop(settings)
    try:
        with get_database(settings).session() as s:
            repo.stop_worker(s, sender.hostname)
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.warning("could not mark worker stopped", exc_info=True)
