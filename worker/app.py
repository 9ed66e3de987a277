"""The Celery app factory. Imports no TensorFlow: the orchestrator imports this to send tasks.

Broker: ``CONVLAB_BROKER_URL`` (Redis in production), else an embedded filesystem broker under
``$CONVLAB_HOME/broker`` that needs no server, so one machine runs everything. Run state lives in the
database, so no result backend is configured.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from contract.settings import Settings, load_settings

QUEUE = "convlab"
EMBEDDED_POLLING_INTERVAL = 0.1  # seconds


def broker_settings(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and transport options for ``settings``; creates the embedded broker's folders."""
    if settings.broker_url:
        options: dict[str, Any] = {}
        if settings.broker_url.startswith(("redis://", "rediss://")):
            # Recovery from a dead worker is driven by the database: the lease re-queues its run and the
            # reaper re-sends a message it had taken (runs.received_by). Redis's redelivery of unacked
            # messages is not needed; a short timeout would only hand a long training's message to a
            # second worker while the first still runs it (harmless thanks to the claim, but a wasted
            # process start each time). So: longer than any task.
            options = {"visibility_timeout": 12 * 3600}
        return settings.broker_url, options
    folder = settings.broker_dir
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        # Producer and consumer share one folder: messages written are the messages read.
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        # An idle consumer looks at the folder this often (kombu's default: every 1 s). A plan's next task
        # is sent when the previous one ends, so each wait is idle time between tasks; a folder listing
        # every 0.1 s costs next to nothing.
        "polling_interval": EMBEDDED_POLLING_INTERVAL,
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    broker, transport_options = broker_settings(settings)
    app = Celery("convlab", broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A task is acknowledged after it ran, and re-queued if its process dies: no run is lost to a crash.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: a long training never sits behind another in a prefetch buffer.
        worker_prefetch_multiplier=1,
        # Warm task processes (worker.warm, worker.pool): a process runs task after task and is replaced
        # when worker.warm says so (failed task, CONVLAB_TASKS_PER_PROCESS, CONVLAB_PROCESS_MEMORY_MB);
        # a crash (OOM, segfault) still takes down only its process (tensorflow#17048).
        worker_max_tasks_per_child=None,
        # A new task process imports Keras before it says it is up (worker_process_init): 4 s, Celery's
        # default wait for that, is about the import itself on a busy 2-core machine.
        worker_proc_alive_timeout=120.0,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        include=["worker.tasks"],
    )
    app.conf.convlab_settings = settings
    return app


@lru_cache(maxsize=1)
def default_app() -> Celery:
    return create_app()


def check_broker(app: Celery, timeout: float = 3.0) -> None:
    """Raise ``OSError``-like errors if the broker cannot be reached, before anything is written."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
