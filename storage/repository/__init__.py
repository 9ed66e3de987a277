"""Functions over a :class:`~sqlalchemy.orm.Session`. They flush but never commit: the caller owns the
transaction (``with db.session() as s:``).

Fencing: each claim gives the attempt a new token (``runs.fence``); every write made on behalf of the run
(heartbeat, epoch, checkpoint, artifact, environment, finish, hand-back) names it and is refused unless it
is still the run's current token, with the condition in the same UPDATE. Delivery is at least once; the
effects are those of exactly one attempt at a time. Lease times are the database's clock (``clock``).

Every status change is one conditional ``UPDATE ... WHERE status = ...`` (compare-and-set), so two workers,
or a redelivered task, can never move a run backwards: a finished run only leaves its terminal state
through :func:`retry_run`.

One module per noun; everything public is re-exported here, so callers write
``from storage import repository as repo`` and ``repo.claim_run(...)``.
"""

from __future__ import annotations

from storage.repository.epochs import epoch_history, metric_history, record_epoch
from storage.repository.files import (
    add_artifact,
    artifact_at,
    artifacts_of,
    clear_artifacts,
    commit_checkpoint_files,
)
from storage.repository.queue import (
    clear_enqueued,
    forget_lost_message,
    forget_unclaimed_message,
    lost_messages,
    mark_enqueued,
    mark_received,
    ready_unenqueued_runs,
    runs_blocked_by_failure,
    stale_runs,
    unclaimed_messages,
)
from storage.repository.runs import (
    create_run,
    dependencies_of,
    dependents_of,
    find_succeeded_by_hash,
    follow_or_own,
    get_run,
    live_run_by_hash,
    mark_damaged,
    results_source,
    runs_held_by,
    set_run_code,
    settle_follower,
    settle_followers,
    succeeded_runs_by_hash,
)
from storage.repository.summaries import RunSummary, run_summary, sweep_runs
from storage.repository.sweeps import create_sweep, get_sweep, latest_sweep
from storage.repository.transitions import (
    cancel_requested,
    cancel_stale_run,
    claim_run,
    fail_run,
    finish_run,
    hand_back_run,
    heartbeat,
    record_environment,
    release_worker_runs,
    request_cancel,
    requeue_stale_run,
    retry_run,
)
from storage.repository.workers import (
    get_worker,
    live_workers,
    runs_for_no_live_worker,
    stop_worker,
    touch_worker,
    upsert_worker,
)

__all__ = [
    "RunSummary",
    "add_artifact",
    "artifact_at",
    "artifacts_of",
    "cancel_requested",
    "cancel_stale_run",
    "claim_run",
    "clear_artifacts",
    "clear_enqueued",
    "commit_checkpoint_files",
    "create_run",
    "create_sweep",
    "dependencies_of",
    "dependents_of",
    "fail_run",
    "find_succeeded_by_hash",
    "follow_or_own",
    "live_run_by_hash",
    "mark_damaged",
    "settle_follower",
    "settle_followers",
    "succeeded_runs_by_hash",
    "finish_run",
    "forget_lost_message",
    "forget_unclaimed_message",
    "get_run",
    "get_sweep",
    "hand_back_run",
    "heartbeat",
    "latest_sweep",
    "get_worker",
    "live_workers",
    "lost_messages",
    "mark_enqueued",
    "mark_received",
    "epoch_history",
    "metric_history",
    "ready_unenqueued_runs",
    "unclaimed_messages",
    "record_environment",
    "record_epoch",
    "release_worker_runs",
    "request_cancel",
    "requeue_stale_run",
    "results_source",
    "retry_run",
    "runs_for_no_live_worker",
    "run_summary",
    "runs_blocked_by_failure",
    "runs_held_by",
    "set_run_code",
    "stale_runs",
    "stop_worker",
    "sweep_runs",
    "touch_worker",
    "upsert_worker",
]
