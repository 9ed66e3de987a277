"""What a task body gets: the run it executes, where to write, and when to stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.config import Settings
from storage.db import Database
from storage.models import ArtifactKind
from worker import shutdown
from worker.heartbeat import RunHeartbeat


class StopReason:
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    LOST = "lost"


@dataclass
class RunContext:
    settings: Settings
    db: Database
    store: ArtifactStore
    run_id: str
    spec: dict[str, Any]
    worker: str
    heartbeat: RunHeartbeat
    sweep_id: str | None = None
    cancel_seen: bool = False
    stopped_because: str | None = field(default=None)

    def should_stop(self) -> bool:
        """Checked by the engine at epoch boundaries. Remembers why, for the task's final state."""
        if self.heartbeat.lost.is_set():
            self.stopped_because = StopReason.LOST
        elif self.cancel_seen:
            self.stopped_because = StopReason.CANCELLED
        elif shutdown.stop_requested(self.settings):
            self.stopped_because = StopReason.SHUTDOWN
        return self.stopped_because is not None

    def run_dir(self) -> str:
        return f"runs/{self.run_id}"

    def save_bytes(self, name: str, data: bytes, kind: ArtifactKind) -> str:
        """Write an artifact of this run atomically and record it with its checksum."""
        stored = self.store.write_bytes(f"{self.run_dir()}/{name}", data)
        with self.db.session() as s:
            repo.add_artifact(
                s, self.run_id, kind=kind, path=stored.path, sha256=stored.sha256, size=stored.size
            )
        return stored.path

    def register_file(self, relpath: str, kind: ArtifactKind) -> None:
        """Record a file that something else (the engine, the report) already wrote under the store."""
        from storage.artifacts import sha256_file

        path = self.store.absolute(relpath)
        with self.db.session() as s:
            repo.add_artifact(
                s, self.run_id, kind=kind, path=relpath, sha256=sha256_file(path), size=path.stat().st_size
            )
