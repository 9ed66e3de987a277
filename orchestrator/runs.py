"""Commands on existing runs: which sweep is meant, cancel, retry."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import UserError
from storage import repository as repo
from storage.config import Settings
from storage.models import RunStatus


def resolve_sweep(db: Any, target: str | None) -> str:
    """A sweep id as given (checked), or the latest sweep."""
    with db.session(readonly=True) as s:
        if target:
            return repo.get_sweep(s, target).id
        latest = repo.latest_sweep(s)
        if latest is None:
            raise UserError("no sweep yet: start one with `orchestrator submit all`")
        return latest.id


def _descendants(s: Any, run_id: str) -> list[Any]:
    seen: dict[str, Any] = {}
    frontier = [run_id]
    while frontier:
        for child in repo.dependents_of(s, frontier.pop()):
            if child.id not in seen:
                seen[child.id] = child
                frontier.append(child.id)
    return list(seen.values())


def cancel_run(db: Any, run_id: str, *, lease_seconds: float) -> list[str]:
    lines = []
    with db.session() as s:
        outcome = repo.request_cancel(s, run_id, lease_seconds=lease_seconds)
        lines.append(
            f"{run_id}: cancelled"
            if outcome == RunStatus.CANCELLED
            else f"{run_id}: will stop at the end of its current epoch"
        )
        for child in _descendants(s, run_id):
            if child.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                repo.request_cancel(s, child.id, lease_seconds=lease_seconds)
                lines.append(f"{child.id}: cancelled (depends on {run_id})")
    return lines


def retry_run(settings: Settings, db: Any, run_id: str) -> list[str]:
    from orchestrator.services import check_broker
    from worker.dispatch import dispatch_ready

    app = check_broker(settings)
    lines = []
    with db.session() as s:
        run = repo.get_run(s, run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise UserError(
                f"retry {run_id}: only failed or cancelled runs can be retried; it is {run.status}"
            )
        repo.retry_run(s, run_id)
        lines.append(f"{run_id}: queued again (resumes from its last checkpoint)")
        for child in _descendants(s, run_id):
            if child.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                repo.retry_run(s, child.id)
                lines.append(f"{child.id}: queued again (depends on {run_id})")
    dispatch_ready(app, db)
    return lines
