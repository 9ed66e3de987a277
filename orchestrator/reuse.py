"""Which planned runs execute, and which take their results from another run: one decision, one home.

For every planned run, in plan order (a run's identity includes those of the runs it consumes):

- **reuse** an earlier identical run that succeeded, was executed (not itself a reuse) and still
  verifies: every recorded artifact has its sha256, a training's checkpoint chain is whole
  (:func:`orchestrator.check.run_problems`). A damaged one is passed over (and named, so the caller
  can say so); ``orchestrator check --repair`` marks it failed so that nobody tries it again.
- **join** an identical run that is queued or running: the new row follows it (see
  :mod:`storage.repository.runs`) instead of computing the same thing a second time. ``--force``
  skips reuse but still joins: a run that is executing now is already a fresh result of this code.
- else **execute**.

Preflight, the estimate and :func:`orchestrator.submit.create_sweep` all ask :func:`decide`, on the same
plan (photos staged first, so a photo is its content everywhere). ``create_sweep`` asks again inside its
write transaction, so its answer is the one of the database it writes to; the two differ only when
another submit or a worker changed the database in between.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy.orm import Session

from orchestrator.check import Problem, run_problems
from orchestrator.plans import PlannedRun
from storage import repository as repo
from storage.artifacts import ArtifactStore


class Action(enum.StrEnum):
    EXECUTE = "execute"
    REUSE = "reuse"  # an earlier identical run succeeded and verifies
    JOIN = "join"  # an identical run is queued or running


@dataclass(frozen=True)
class Decision:
    identity: str
    action: Action
    source: str | None = None  # the run reused or joined
    damaged: tuple[Problem, ...] = ()  # earlier identical results passed over because they do not verify


def decide_run(
    s: Session,
    store: ArtifactStore | None,
    planned: PlannedRun,
    identity: str,
    *,
    force: bool,
) -> Decision:
    """The decision for one planned run whose identity is known. ``store`` None: results are taken
    without verifying them (only for tests without files)."""
    if not planned.cacheable:
        return Decision(identity, Action.EXECUTE)
    live = repo.live_run_by_hash(s, identity)
    if live is not None:
        return Decision(identity, Action.JOIN, live.id)
    damaged: list[Problem] = []
    if not force:
        for earlier in repo.succeeded_runs_by_hash(s, identity):
            problems = run_problems(s, store, earlier) if store is not None else []
            if not problems:
                return Decision(identity, Action.REUSE, earlier.id, tuple(damaged))
            damaged += problems
    return Decision(identity, Action.EXECUTE, damaged=tuple(damaged))


def decide(
    s: Session,
    store: ArtifactStore | None,
    runs: tuple[PlannedRun, ...] | list[PlannedRun],
    *,
    code_identity: str,
    force: bool,
) -> dict[str, Decision]:
    """Plan key -> decision, for every planned run (in order: dependencies come first)."""
    decisions: dict[str, Decision] = {}
    for planned in runs:
        identity = planned.identity(code_identity, tuple(decisions[k].identity for k in planned.depends_on))
        decisions[planned.key] = decide_run(s, store, planned, identity, force=force)
    return decisions
