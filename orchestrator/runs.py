"""Commands on existing runs: which sweep is meant, cancel, retry."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import UserError
from orchestrator.preflight import Work
from storage import repository as repo
from storage.db import Database
from storage.models import RunKind, RunStatus


def resolve_sweep(db: Database, target: str | None) -> str:
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


def describe(run: Any) -> str:
    """``r-... (train scratch)``; a report is just ``(report)``."""
    what = str(run.kind) if run.label in ("", str(run.kind)) else f"{run.kind} {run.label}"
    return f"{run.id} ({what})"


def _cancel_line(run: Any, outcome: RunStatus, why: str = "") -> str:
    what = describe(run)
    if outcome == RunStatus.CANCELLED:
        return f"{what}: cancelled{why}"
    return f"{what}: will stop at the end of its current epoch{why}"


def cancel_run(db: Database, run_id: str, *, lease_seconds: float) -> list[str]:
    """Cancel a run and what cannot run without it. Not the sweep's report: it waits for its
    dependencies to end, not to succeed, so a partial sweep still gets its report."""
    lines = []
    with db.session() as s:
        run = repo.get_run(s, run_id)
        lines.append(_cancel_line(run, repo.request_cancel(s, run_id, lease_seconds=lease_seconds)))
        for child in _descendants(s, run_id):
            if child.kind != RunKind.REPORT and child.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                lines.append(
                    _cancel_line(
                        child,
                        repo.request_cancel(s, child.id, lease_seconds=lease_seconds),
                        f" (depends on {run_id})",
                    )
                )
    return lines


def cancel_sweep(db: Database, sweep_id: str, *, lease_seconds: float) -> list[str]:
    """Cancel every run of a sweep that has not ended, its report included."""
    lines = []
    with db.session() as s:
        repo.get_sweep(s, sweep_id)
        for run in repo.sweep_runs(s, sweep_id):
            if not run.status.is_terminal:
                lines.append(_cancel_line(run, repo.request_cancel(s, run.id, lease_seconds=lease_seconds)))
    if not lines:
        raise UserError(f"cancel {sweep_id}: every run of this sweep has already ended")
    lines.append(
        f"`orchestrator report {sweep_id}` reports what finished; `orchestrator retry {sweep_id}` resumes"
    )
    return lines


def sweep_of(db: Database, target: str) -> str:
    """The sweep of a run id, or a sweep id itself (checked)."""
    with db.session(readonly=True) as s:
        if target.startswith("r-"):
            sweep_id = repo.get_run(s, target).sweep_id
            if sweep_id is None:
                raise UserError(f"{target}: belongs to no sweep")
            return sweep_id
        return repo.get_sweep(s, target).id


def retry_targets(db: Database, target: str) -> list[Work]:
    """What ``retry TARGET`` would run again: (kind, spec, label) of each failed or cancelled run."""
    with db.session(readonly=True) as s:
        runs = _retry_candidates(s, target)
        return [(RunKind(r.kind), dict(r.spec), r.label) for r in runs]


def _retry_candidates(s: Any, target: str) -> list[Any]:
    retryable = (RunStatus.FAILED, RunStatus.CANCELLED)
    if target.startswith("r-"):
        run = repo.get_run(s, target)
        if run.status not in retryable:
            raise UserError(
                f"retry {target}: only failed or cancelled runs can be retried; it is {run.status}"
            )
        return [run] + [c for c in _descendants(s, target) if c.status in retryable]
    repo.get_sweep(s, target)
    runs = [repo.get_run(s, r.id) for r in repo.sweep_runs(s, target) if r.status in retryable]
    if not runs:
        raise UserError(f"retry {target}: no failed or cancelled run in this sweep")
    return runs


def retry(db: Database, target: str) -> list[str]:
    """Queue a failed or cancelled run again (with its dependents), or every such run of a sweep.

    Nothing is sent here: the caller dispatches once the transaction is committed."""
    lines = []
    with db.session() as s:
        for run in _retry_candidates(s, target):
            repo.retry_run(s, run.id)
            why = f" (depends on {target})" if run.id != target and target.startswith("r-") else ""
            resume = " (resumes from its last checkpoint)" if run.kind == RunKind.TRAIN else ""
            lines.append(f"{describe(run)}: queued again{resume}{why}")
    return lines
