"""Celery's prefork pool, with task processes that stay for the next task until they must be recycled.

``orchestrator worker`` runs ``--pool worker.pool:WarmTaskPool``. The only change to Celery's pool: a task
process about to wait for its next job first asks :func:`worker.warm.recycle_reason`, and when there is
one it logs it and exits with billiard's "recycle" status, the same exit ``max_tasks_per_child`` takes.

Why there, and not at the end of the task: billiard sends a job's result to the main process after the
task function returned (``Worker.workloop``: ``put((READY, ...))``). A process that exits inside the task
(``sys.exit``, ``os._exit``) exits before that: the main process sees a lost worker, and with
``task_reject_on_worker_lost`` re-queues a task that had in fact ended. Here the result is already sent,
and billiard's ``workloop`` still waits, in its ``finally``, until the main process has read it. With the
event loop's pool (Redis), a job that the main process wrote to this process's own pipe meanwhile, unread,
is put back in the main process's outbound queue when the process is gone (``AsynPool.on_partial_read``),
as for ``max_tasks_per_child``; the blocking pool (the embedded broker) has one queue that all processes
read, so an exiting process takes nothing from it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from billiard import pool as billiard_pool
from billiard.pool import EX_RECYCLE
from celery.concurrency import asynpool, prefork

from worker import warm

log = logging.getLogger(__name__)


def _leave_when_told(worker: Any) -> None:
    """Wrap ``worker.wait_for_job`` (set by ``_make_child_methods`` in the task process, before its loop
    starts) so the process leaves, between two tasks, when :mod:`worker.warm` says it must."""
    receive: Callable[..., Any] = worker.wait_for_job

    def wait_for_job(*args: Any, **kwargs: Any) -> Any:
        reason = warm.recycle_reason()
        if reason is not None:
            log.warning("task process %d recycled after %d tasks: %s", os.getpid(), warm.tasks_run(), reason)
            sys.exit(EX_RECYCLE)  # billiard's sys.exit in its processes: it exits with this status
        return receive(*args, **kwargs)

    worker.wait_for_job = wait_for_job


class WarmWorker(asynpool.Worker):  # type: ignore[misc]
    """The event loop's pool process (a Redis broker)."""

    def _make_child_methods(self, *args: Any, **kwargs: Any) -> None:
        super()._make_child_methods(*args, **kwargs)
        _leave_when_told(self)


class WarmBlockingWorker(billiard_pool.Worker):  # type: ignore[misc]
    """The blocking pool's process (a broker without an event loop: the embedded filesystem broker)."""

    def _make_child_methods(self, *args: Any, **kwargs: Any) -> None:
        super()._make_child_methods(*args, **kwargs)
        _leave_when_told(self)


class WarmAsynPool(asynpool.AsynPool):  # type: ignore[misc]
    Worker = WarmWorker


class WarmBlockingPool(billiard_pool.Pool):  # type: ignore[misc]
    Worker = WarmBlockingWorker


class WarmTaskPool(prefork.TaskPool):  # type: ignore[misc]
    """Celery picks one of the two pools by whether the broker runs in its event loop."""

    Pool = WarmAsynPool
    BlockingPool = WarmBlockingPool
