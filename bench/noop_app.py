"""convlab's worker with a no-op body for report runs: measures the runner's own cost per task
(claim, heartbeat thread, finish, dependents) for bench/dispatch.py. Not for production."""

from __future__ import annotations

from storage.models import RunKind
from worker.main import app  # noqa: F401  (the real app, signals and tasks)
from worker.runners import RUNNERS

RUNNERS[RunKind.REPORT] = lambda ctx: None
