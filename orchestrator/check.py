"""``orchestrator check``: is every run's evidence intact? Like ``git fsck`` for a convlab home.

For every run in scope it verifies that each recorded artifact exists with the recorded sha256, and that
each succeeded training stands on a complete checkpoint chain: the run names a checkpoint state file that
is a recorded artifact, that file describes the run's last epoch, every epoch row in the database holds
exactly the values the checkpoint's history holds (so rows and checkpoint come from the same attempts),
and the model file it names is recorded too.

A run that takes its results from another (a cached or joined run, ``reused_run_id``) is checked through
that run: its problems are the other run's, named as reached through it. ``--repair`` marks every damaged
executed run failed, with the problem as its error, so the next ``submit`` of its plan runs it again
(:func:`repair`); the files are left as they are, for whoever wants to look at them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.errors import ArtifactError
from storage.models import Artifact, Run, RunKind, RunStatus

# The epoch fields a checkpoint's history shares with an epoch row (the state file is written by the
# engine as JSON; reading its keys here keeps the orchestrator free of the engine's imports).
_EPOCH_FIELDS = ("phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr")


@dataclass(frozen=True)
class Problem:
    run_id: str  # the run whose evidence is damaged
    what: str
    via: str | None = None  # the run in scope that takes its results from ``run_id`` (cached, joined)

    def __str__(self) -> str:
        if self.via is not None:
            return f"{self.via}: reuses {self.run_id}: {self.what}"
        return f"{self.run_id}: {self.what}"


@dataclass(frozen=True)
class CheckResult:
    runs: int
    artifacts: int
    problems: tuple[Problem, ...]

    @property
    def intact(self) -> bool:
        return not self.problems


def runs_in_scope(s: Session, target: str | None) -> list[Run]:
    """One run (``r-...``), a sweep's runs (``s-...``), or every run when no target is given."""
    if target is None:
        return list(s.scalars(select(Run).order_by(Run.created_at, Run.id)))
    if target.startswith("r-"):
        return [repo.get_run(s, target)]
    sweep = repo.get_sweep(s, target)
    return list(s.scalars(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.created_at, Run.id)))


def run_problems(s: Session, store: ArtifactStore, run: Run) -> list[Problem]:
    """What is wrong with the evidence of one executed run: its artifacts' sha256 and, for a succeeded
    training, its checkpoint chain. Hashes every file (about 0.1 s for a 40 MB checkpoint: see
    ``docs/reuse.md``), which is what reusing a result must cost at least to know it is intact."""
    artifacts = repo.artifacts_of(s, run.id)
    problems: list[Problem] = []
    for art in artifacts:
        try:
            store.verify(art.path, art.sha256)
        except ArtifactError as exc:
            problems.append(Problem(run.id, f"{art.path}: {exc.reason}"))
    if run.kind == RunKind.TRAIN and run.status == RunStatus.SUCCEEDED:
        problems += _check_training(run, artifacts, repo.metric_history(s, run.id), store)
    return problems


def check(db: Database, store: ArtifactStore, target: str | None = None) -> CheckResult:
    """Check every run in scope, and for a run that takes its results from another, that other run."""
    problems: list[Problem] = []
    with db.session(readonly=True) as s:
        runs = runs_in_scope(s, target)
        own: dict[str, list[Problem]] = {}
        for run in runs:
            source = run if run.reused_run_id is None else repo.get_run(s, run.reused_run_id)
            if source.id not in own:
                own[source.id] = run_problems(s, store, source)
            if source is run:
                problems += own[run.id]
            else:  # a cached or joined run: the results it stands on are the other run's
                problems += [replace(p, via=run.id) for p in own[source.id]]
        total = sum(len(repo.artifacts_of(s, run_id)) for run_id in own)
    return CheckResult(runs=len(runs), artifacts=total, problems=tuple(problems))


def repair(db: Database, problems: tuple[Problem, ...]) -> list[str]:
    """Mark every damaged executed run that succeeded as failed, naming its first problem: no later
    submit reuses it (its identity runs again) and ``status`` says why. Returns the runs marked."""
    damaged: dict[str, str] = {}
    for problem in problems:
        damaged.setdefault(problem.run_id, problem.what)
    marked = []
    with db.session() as s:
        for run_id, what in damaged.items():
            if repo.mark_damaged(s, run_id, f"damaged after it succeeded: {what}"):
                marked.append(run_id)
    return marked


def _check_training(
    run: Run, artifacts: list[Artifact], epochs: list[Any], store: ArtifactStore
) -> list[Problem]:
    recorded = {a.path: a.sha256 for a in artifacts}
    if not run.checkpoint:
        return [Problem(run.id, "succeeded but names no checkpoint")]
    if run.checkpoint not in recorded:
        return [Problem(run.id, f"{run.checkpoint}: the run's checkpoint is not a recorded artifact")]
    try:
        state = json.loads(store.read_bytes(run.checkpoint, recorded[run.checkpoint]))
        history = {int(h["epoch"]): h for h in state["history"]}
        last, model_file = int(state["epoch"]), str(state["model_file"])
    except ArtifactError:
        return []  # already reported by the checksum pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem(run.id, f"{run.checkpoint}: unreadable checkpoint state ({type(exc).__name__})")]
    problems = []
    model_rel = f"{run.checkpoint.rsplit('/', 1)[0]}/{model_file}"
    if model_rel not in recorded:
        problems.append(Problem(run.id, f"{model_rel}: the checkpoint's model is not a recorded artifact"))
    rows = {m.epoch: m for m in epochs}
    if last != run.last_epoch or last != max(rows, default=0) or last != run.total_epochs:
        problems.append(
            Problem(
                run.id,
                f"{run.checkpoint}: describes epoch {last}, but the run's last epoch is {run.last_epoch} "
                f"({len(rows)} epoch rows, {run.total_epochs} planned)",
            )
        )
    for epoch in sorted(set(rows) | set(history)):
        row, saved = rows.get(epoch), history.get(epoch)
        if row is None or saved is None:
            where = "the database" if row is None else "the checkpoint"
            problems.append(Problem(run.id, f"epoch {epoch}: missing from {where}"))
        elif any(getattr(row, f) != saved.get(f) for f in _EPOCH_FIELDS):
            problems.append(Problem(run.id, f"epoch {epoch}: the database row differs from the checkpoint"))
    return problems
