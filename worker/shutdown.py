"""Graceful hand-off on SIGTERM (``docker stop``, scale-down).

Celery's main process gets the signal; its task processes do not (Docker signals PID 1 only). The main
process drops a flag file that its children check at every epoch boundary: the child then stops after
the checkpoint of the epoch it is in, re-queues its run and exits, well inside the grace period.
A child also honours a SIGTERM sent to itself the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from contract.settings import Settings

_signalled = threading.Event()


def flag_path(settings: Settings, worker_pid: int) -> Path:
    # Host name too: on a shared volume, every container's main process may be PID 1.
    return settings.home / "workers" / f"{socket.gethostname()}-{worker_pid}.stopping"


def request_stop(settings: Settings) -> None:
    """Called in the worker's main process when it starts shutting down."""
    path = flag_path(settings, os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def clear_stop(settings: Settings) -> None:
    flag_path(settings, os.getpid()).unlink(missing_ok=True)


def install_child_handler() -> Any:
    """In a task process, for one task: turn SIGTERM into 'stop at the next epoch boundary' instead of
    dying. Returns the handler it replaced, for :func:`restore_child_handler` when the task ends (an idle
    warm task process dies of SIGTERM as a fresh one does); None off the main thread (nothing done)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: _signalled.set())


def restore_child_handler(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def signalled() -> bool:
    """Whether this task process itself got SIGTERM (it then serves no further task)."""
    return _signalled.is_set()


def stop_requested(settings: Settings) -> bool:
    """True in a task process once its worker is shutting down."""
    return _signalled.is_set() or flag_path(settings, os.getppid()).exists()
