"""Recovery that needs no human: runs left behind by dead workers, and runs nobody has sent yet.

Every worker runs :func:`reap` on a timer. All of it is compare-and-set in the database, so any number of
workers may reap at once.

- A ``running`` run whose heartbeat is older than the lease lost its worker (SIGKILL, power cut, OOM
  killer, a pause): it goes back to ``queued`` and is sent again, and the next worker resumes it from its
  last committed checkpoint. After ``max_attempts`` losses it is failed with the reason instead; if its
  cancel was requested it is cancelled (never claimed again). Should the old attempt wake up, its fencing
  token is stale and every write it tries is refused.
- A ``queued`` run whose message was taken off the broker by a worker that died before any task process
  claimed it is sent again (the message died with that worker).
- A ``queued`` run whose dependency failed is failed, naming the dependency.
- A ``queued`` run whose dependencies all succeeded and that no message carries is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery

from storage import repository as repo
from storage.db import Database
from worker.dispatch import dispatch_ready, fail_blocked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapReport:
    requeued: tuple[str, ...]
    failed: tuple[str, ...]
    sent: tuple[str, ...]
    cancelled: tuple[str, ...] = ()
    resent: tuple[str, ...] = ()  # messages lost with the worker that had taken them


def reap(app: Celery, db: Database, *, lease_seconds: float, code: str | None = None) -> ReapReport:
    """One pass. ``code``: the code of the reaping worker; it sends only runs submitted for it."""
    requeued: list[str] = []
    failed: list[str] = []
    cancelled: list[str] = []
    resent: list[str] = []
    with db.session() as s:
        for run in repo.stale_runs(s, lease_seconds=lease_seconds):
            if run.cancel_requested:
                if repo.cancel_stale_run(s, run.id, lease_seconds=lease_seconds):
                    cancelled.append(run.id)
            elif run.attempts >= run.max_attempts:
                reason = (
                    f"gave up after {run.attempts} attempts: worker {run.worker} stopped sending heartbeats "
                    f"(lease {lease_seconds:g} s) each time"
                )
                if repo.fail_run(s, run.id, reason, lost_after_seconds=lease_seconds):
                    failed.append(run.id)
            elif repo.requeue_stale_run(s, run.id, lease_seconds=lease_seconds):
                log.warning("run %s lost its worker %s; re-queued", run.id, run.worker)
                requeued.append(run.id)
        for run in repo.lost_messages(s, lease_seconds=lease_seconds):
            assert run.received_by is not None
            if repo.forget_lost_message(s, run.id, run.received_by):
                log.warning(
                    "run %s: its message died with worker %s; sending it again", run.id, run.received_by
                )
                resent.append(run.id)
        failed.extend(fail_blocked(s))
    sent = dispatch_ready(app, db, code=code)
    return ReapReport(tuple(requeued), tuple(failed), tuple(sent), tuple(cancelled), tuple(resent))
