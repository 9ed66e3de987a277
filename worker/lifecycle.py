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

from celery.signals import (
    task_received,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from contract.version import code_identity
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
            code_identity=code_identity(),  # loaded in this process at start (worker.main), before forks
        )
    process = multiprocessing.get_context("spawn").Process(
        target=run_maintenance, args=(settings, name, os.getpid()), name="convlab-maintenance", daemon=True
    )
    process.start()
    _maintenance.append(process)


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    """In each new task process, right after the fork: import Keras there, so its first task is warm."""
    from worker.app import default_app
    from worker.warm import prepare_process

    prepare_process(default_app().conf.convlab_settings)


@task_received.connect
def _on_task_received(sender: Any, request: Any, **_: Any) -> None:
    """Record which worker took a run's message, before any task process exists for it.

    If this worker dies before a task process claims the run, the message dies with it (the embedded
    broker deleted it on fetch; Redis hides it for its visibility timeout): the reaper of any live worker
    then sends the run again. Runs here, in the main thread that also forks the task processes, so no
    fork can happen in the middle of this transaction.
    """
    args = getattr(request, "args", None) or ()
    if not args:
        return
    settings = sender.app.conf.convlab_settings
    try:
        with get_database(settings).session() as s:
            repo.mark_received(s, str(args[0]), sender.hostname)
    except Exception:  # noqa: BLE001 - never refuse a message over bookkeeping; the lease still covers it
        log.warning("could not record the receipt of %s", args[0], exc_info=True)


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
