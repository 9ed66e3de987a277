"""A running task's proof of life: a thread that refreshes ``heartbeat_at`` while the task works.

Epochs can take minutes, so the heartbeat cannot wait for epoch boundaries. If the update finds the run
no longer held by this worker (another worker took it over after a missed lease, or it was cancelled
outright), ``lost`` is set and the task stops at its next epoch boundary without writing a final state.
"""

from __future__ import annotations

import logging
import threading

from storage import repository as repo
from storage.db import Database

log = logging.getLogger(__name__)


class RunHeartbeat:
    def __init__(self, db: Database, run_id: str, worker: str, interval: float) -> None:
        self._db = db
        self._run_id = run_id
        self._worker = worker
        self._interval = interval
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._db.session() as s:
                    held = repo.heartbeat(s, self._run_id, self._worker)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the run; retry next beat
                log.warning("heartbeat for %s failed; retrying", self._run_id, exc_info=True)
                continue
            if not held:
                log.warning(
                    "run %s is no longer held by %s; stopping at the next epoch", self._run_id, self._worker
                )
                self.lost.set()
                return
