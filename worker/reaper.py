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
- A ``queued`` run whose message a live worker received long ago (``CONVLAB_RESEND_SECONDS``) and no
  task claimed is sent again, whatever lost the message after its receipt (a task that failed before its
  claim and could neither say so nor give the message back). At most once per that bound per run: the
  send and the next receipt stamp the run anew.
- A ``queued`` run whose dependency failed is failed, naming the dependency.
- A ``queued`` run whose dependencies all succeeded and that no message carries is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.orm import Session

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
    resent: tuple[str, ...] = ()  # messages lost (with the worker that had taken them, or unclaimed)


def reap(
    app: Celery,
    db: Database,
    *,
    lease_seconds: float,
    resend_seconds: float | None = None,
    code: str | None = None,
) -> ReapReport:
    """One pass. ``resend_seconds``: also re-send queued runs whose message went unclaimed that long
    (:func:`storage.repository.unclaimed_messages`); None leaves them alone. ``code``: the code of the
    reaping worker; it sends only runs submitted for it."""
    requeued: list[str] = []
    failed: list[str] = []
    cancelled: list[str] = []
    resent: list[str] = []
    with db.session() as s:
        if resend_seconds is not None:
            resent += _resend_unclaimed(s, resend_seconds=resend_seconds)
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
            else:
                lost_worker = run.worker  # read before the re-queue clears it on the loaded object
                if repo.requeue_stale_run(s, run.id, lease_seconds=lease_seconds):
                    log.warning("run %s lost its worker %s; re-queued", run.id, lost_worker)
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


def _resend_unclaimed(s: Session, *, resend_seconds: float) -> list[str]:
    """Forget the messages no task claimed within ``resend_seconds`` of their receipt, so that they are
    sent again."""
    resent = []
    for run in repo.unclaimed_messages(s, after_seconds=resend_seconds):
        if repo.forget_unclaimed_message(s, run.id, after_seconds=resend_seconds):
            log.warning(
                "run %s: received by %s over %g s ago and never claimed; sending it again",
                run.id,
                run.received_by,
                resend_seconds,
            )
            resent.append(run.id)
    return resent
