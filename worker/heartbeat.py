"""A running task's proof of life: a thread that refreshes ``heartbeat_at`` while the task works.

Epochs can take minutes, so the heartbeat cannot wait for epoch boundaries. Each beat is a fenced write:
if it finds the run no longer held by this attempt (another worker took it over after a missed lease, it
was cancelled outright, ...) ``lost`` is set and the task stops at once at its next write or check,
without writing anything. A requested cancel is noticed here too (``cancelled``), so work that has no
epochs (a visualization, a report) stops within one heartbeat interval.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from storage import repository as repo
from storage.db import Database

log = logging.getLogger(__name__)


class RunHeartbeat:
    def __init__(self, db: Database, run_id: str, fence: int, interval: float) -> None:
        self._db = db
        self._run_id = run_id
        self._fence = fence
        self._interval = interval
        self._stop = threading.Event()
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        # Set by the task as it works (one assignment: safe across threads); sent with the next beat.
        self.progress: dict[str, Any] | None = None
        self._sent_progress: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def beat(self) -> None:
        """One fenced heartbeat; sets ``lost`` or ``cancelled`` as the database says."""
        progress = self.progress
        with self._db.session() as s:
            held = repo.heartbeat(
                s, self._run_id, self._fence, progress=progress if progress != self._sent_progress else None
            )
            if held and repo.cancel_requested(s, self._run_id):
                self.cancelled.set()
        self._sent_progress = progress
        if not held:
            log.warning(
                "run %s is no longer held by attempt %d; stopping without writing", self._run_id, self._fence
            )
            self.lost.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the run; retry next beat
                log.warning("heartbeat for %s failed; retrying", self._run_id, exc_info=True)
                continue
            if self.lost.is_set():
                return
