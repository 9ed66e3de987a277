"""The module ``celery -A worker.main worker`` loads: the app, its tasks and its worker signals."""

from __future__ import annotations

from worker.app import default_app

app = default_app()

import worker.lifecycle  # noqa: E402,F401  (connects worker signals: heartbeat, reaper, shutdown flag)
import worker.tasks  # noqa: E402,F401  (registers the tasks on this app)
