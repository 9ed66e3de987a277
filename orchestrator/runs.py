"""Commands on existing runs: which sweep is meant, cancel, retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UserError
from orchestrator.preflight import Work
from storage import repository as repo
from storage.db import Database
from storage.models import ENDED_BADLY, RunKind, RunStatus


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


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did to one run: ``outcome`` CANCELLED (at once) or RUNNING (stops at its next
    epoch boundary); ``because_of`` the run whose cancel took this one along, if any."""

    run: str  # as :func:`describe` says it
    outcome: RunStatus
    because_of: str | None = None


@dataclass(frozen=True)
class Requeued:
    run: str  # as :func:`describe` says it
    resumes: bool  # a training resumes from its last checkpoint (one without a checkpoint starts)
    because_of: str | None = None
    kind: RunKind | None = None


def cancel_run(db: Database, run_id: str, *, lease_seconds: float) -> list[Cancelled]:
    """Cancel a run and what cannot run without it. Not the sweep's report: it waits for its
    dependencies to end, not to succeed, so a partial sweep still gets its report."""
    done = []
    with db.session() as s:
        run = repo.get_run(s, run_id)
        done.append(Cancelled(describe(run), repo.request_cancel(s, run_id, lease_seconds=lease_seconds)))
        for child in _descendants(s, run_id):
            if child.kind != RunKind.REPORT and child.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                outcome = repo.request_cancel(s, child.id, lease_seconds=lease_seconds)
                done.append(Cancelled(describe(child), outcome, because_of=run_id))
    return done


def cancel_sweep(db: Database, sweep_id: str, *, lease_seconds: float) -> list[Cancelled]:
    """Cancel every run of a sweep that has not ended, its report included."""
    done = []
    with db.session() as s:
        repo.get_sweep(s, sweep_id)
        for run in repo.sweep_runs(s, sweep_id):
            if not run.status.is_terminal:
                done.append(
                    Cancelled(describe(run), repo.request_cancel(s, run.id, lease_seconds=lease_seconds))
                )
    if not done:
        raise UserError(f"cancel {sweep_id}: every run of this sweep has already ended")
    return done


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
    retryable = ENDED_BADLY
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


def retry(db: Database, target: str, code_identity: str | None = None) -> list[Requeued]:
    """Queue a failed or cancelled run again (with its dependents), or every such run of a sweep.

    ``code_identity``: the code that retries. A run submitted for other code is then retried for this
    one, its identity computed again as submit would: only a worker of this code claims it, and its
    result is never taken for the old code's. Nothing is sent here: the caller dispatches once the
    transaction is committed."""
    done = []
    with db.session() as s:
        candidates = sorted(_retry_candidates(s, target), key=lambda r: (r.created_at, r.id))
        for run in candidates:  # dependencies first: a dependent's identity includes theirs
            # A training resumes only from a checkpoint it committed; one that never got that far starts.
            resumes = run.kind == RunKind.TRAIN and run.checkpoint is not None
            repo.retry_run(s, run.id)
            if code_identity is not None and run.code_identity not in (None, code_identity):
                _follow_code(s, run, code_identity)
            because_of = target if run.id != target and target.startswith("r-") else None
            done.append(Requeued(describe(run), resumes, because_of, RunKind(run.kind)))
    return done


def _follow_code(s: Any, run: Any, code_identity: str) -> None:
    """The identity ``run`` has under ``code_identity`` (``PlannedRun.identity``): its spec, the
    identities of its inputs, the code."""
    from contract.specs import run_identity

    # The runs it consumes, not the one it follows (a joined run depends on that one too).
    inputs = tuple(d.spec_hash for d in repo.dependencies_of(s, run.id) if d.id != run.reused_run_id)
    identity = run_identity(run.kind.value, dict(run.spec), code_identity, inputs)
    repo.set_run_code(s, run.id, code_identity=code_identity, spec_hash=identity)
