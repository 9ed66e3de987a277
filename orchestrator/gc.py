"""``orchestrator gc``: remove the files of lost attempts that no database row references.

A SIGKILLed attempt leaves what it was writing (a partial ``.model-e*.tmp.keras``) and, killed between a
checkpoint's commit and the removal of the older pair, a complete pair nobody will read again. Such files
are found by comparing the store's listing with the database.

**The rule, and the race it closes.** A running attempt writes each checkpoint (and each visualization
image, each report file) *before* the database records it: until that commit the file is unreferenced
but needed. So the files of a *live* attempt are never touched: attempt ``n`` of a run is live when the
run is ``running`` with ``fence == n``, or when ``n`` is above the fence read (a claim made after that
read). Every other attempt can never commit again: a commit needs ``running`` and its own fence, and the
fence only grows with each claim; so what it wrote and no row references is garbage for ever. The runs
are read before the references, so a reference removed meanwhile only hides a file until the next gc,
never the reverse. Files outside an attempt's folder, or of a run the database does not know, and
temporary files anywhere are removed only once older than :func:`grace_seconds` (a few leases), which
covers a run created after the read and a write still under way. Paths only go through the
:class:`~storage.artifacts.ArtifactStore` interface (list, delete), so an object-store backend gets the
same gc.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from storage.artifacts import ArtifactStore, ListedFile
from storage.db import Database
from storage.models import Artifact, Run, RunStatus

# At least this long, whatever the lease: a copy or a report write in progress takes seconds.
MIN_GRACE_SECONDS = 900.0
RUNS_PREFIX = "runs"


@dataclass(frozen=True)
class RunState:
    status: RunStatus
    fence: int


@dataclass(frozen=True)
class Garbage:
    files: tuple[ListedFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def grace_seconds(lease_seconds: float) -> float:
    """How old an unreferenced file must be when the rule cannot tell whose it is: a few leases."""
    return max(3 * lease_seconds, MIN_GRACE_SECONDS)


def is_garbage(
    file: ListedFile,
    *,
    runs: dict[str, RunState],
    referenced: set[str],
    now: float,
    grace: float,
    store: ArtifactStore,
) -> bool:
    """The rule of the module docstring, for one listed file."""
    if file.path in referenced:
        return False
    old = now - file.mtime > grace
    owner = store.attempt_of(file.path)
    if owner is None or owner[0] not in runs:
        return old  # not an attempt's file, or a run created after the read: only once old
    run = runs[owner[0]]
    live = owner[1] > run.fence or (owner[1] == run.fence and run.status == RunStatus.RUNNING)
    return not live


def find_garbage(
    db: Database, store: ArtifactStore, *, lease_seconds: float, run_ids: Iterable[str] | None = None
) -> Garbage:
    """Unreferenced files of lost attempts (under ``runs/``; of ``run_ids`` only, when given) and stale
    temporary files anywhere in the store."""
    with db.session(readonly=True) as s:
        # Runs first, then references: see the module docstring.
        runs = {r.id: RunState(r.status, r.fence) for r in s.execute(select(Run.id, Run.status, Run.fence))}
        referenced = set(s.scalars(select(Artifact.path)))
        referenced |= {c for c in s.scalars(select(Run.checkpoint)) if c}
    wanted = None if run_ids is None else {store.run_dir(r) for r in run_ids}
    if wanted is None:
        listed = store.list_files()
    else:
        listed = [f for prefix in sorted(wanted) for f in store.list_files(prefix)]
    now, grace = time.time(), grace_seconds(lease_seconds)
    found = []
    for file in listed:
        if not file.path.startswith(RUNS_PREFIX + "/") and not store.is_temporary(file.path):
            continue  # staged inputs, published reports: no attempt's
        if is_garbage(file, runs=runs, referenced=referenced, now=now, grace=grace, store=store):
            found.append(file)
    return Garbage(tuple(found))


def remove(store: ArtifactStore, garbage: Garbage) -> None:
    """Delete the files, then the attempt folders they leave empty (never a live attempt's: none of
    its files is garbage, and its folder still holds them)."""
    for file in garbage.files:
        store.delete(file.path)
    owners = {owner for f in garbage.files if (owner := store.attempt_of(f.path))}
    for run_id, fence in sorted(owners):
        store.remove_empty_folders(store.attempt_dir(run_id, fence))
