"""The records of a run's files (the files themselves live in :mod:`storage.artifacts`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import (
    Artifact,
    ArtifactKind,
    utcnow,
)
from storage.repository._base import _fenced, _insert


def add_artifact(
    s: Session, run_id: str, *, fence: int, kind: ArtifactKind, path: str, sha256: str, size: int
) -> Artifact:
    """Record a stored file of attempt ``fence`` (:class:`LeaseLost` unless it holds the run); writing
    the same path again replaces the record."""
    _fenced(s, run_id, fence)
    values = {"kind": ArtifactKind(kind), "sha256": sha256, "bytes": int(size), "created_at": utcnow()}
    stmt = _insert(s, Artifact).values(run_id=run_id, path=path, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["run_id", "path"], set_=values))
    artifact = s.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.path == path)
        .execution_options(populate_existing=True)
    ).one()
    return artifact


def clear_artifacts(s: Session, run_id: str, *, fence: int) -> None:
    """Forget every file recorded for the run (attempt ``fence`` starts its outputs afresh)."""
    _fenced(s, run_id, fence)
    s.execute(delete(Artifact).where(Artifact.run_id == run_id))


def commit_checkpoint_files(
    s: Session, run_id: str, *, fence: int, files: Sequence[tuple[str, str, int]]
) -> list[str]:
    """Record ``files`` (path, sha256, size) as the run's checkpoint artifacts, replacing the records of
    every older checkpoint. Fenced like every write. Returns the paths no longer recorded: the caller
    deletes them from the store once this transaction committed (never before: until then they are
    the run's checkpoint)."""
    _fenced(s, run_id, fence)
    keep = [path for path, _, _ in files]
    older = (Artifact.run_id == run_id, Artifact.kind == ArtifactKind.CHECKPOINT, Artifact.path.not_in(keep))
    superseded = list(s.scalars(select(Artifact.path).where(*older)))
    s.execute(delete(Artifact).where(*older))
    for path, sha256, size in files:
        add_artifact(
            s, run_id, fence=fence, kind=ArtifactKind.CHECKPOINT, path=path, sha256=sha256, size=size
        )
    return superseded


def artifact_at(s: Session, run_id: str, path: str) -> Artifact | None:
    return s.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.path == path)).first()


def artifacts_of(s: Session, run_id: str) -> list[Artifact]:
    return list(s.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.path)))
