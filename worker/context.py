"""What a task body gets: the run it executes, the attempt's fencing token, where to write, when to stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.settings import Settings
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.errors import LeaseLost
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
    fence: int  # this attempt's token: every write on behalf of the run carries it
    spec: dict[str, Any]
    worker: str
    heartbeat: RunHeartbeat
    sweep_id: str | None = None
    cancel_seen: bool = False
    stopped_because: str | None = field(default=None)

    def should_stop(self) -> bool:
        """Checked by the engine at epoch boundaries (and between steps of a visualization). Remembers
        why, for the task's final state. A lost run stops at once: :class:`LeaseLost` is raised."""
        if self.heartbeat.lost.is_set():
            self.stopped_because = StopReason.LOST
            raise LeaseLost(self.run_id, self.fence)
        if self.cancel_seen or self.heartbeat.cancelled.is_set():
            self.stopped_because = StopReason.CANCELLED
        elif shutdown.stop_requested(self.settings):
            self.stopped_because = StopReason.SHUTDOWN
        return self.stopped_because is not None

    def attempt_dir(self) -> str:
        """This attempt's own folder: no other attempt of the run ever writes there, so a paused attempt
        that wakes up after losing its run cannot clobber the files of the attempt that replaced it."""
        return self.store.attempt_dir(self.run_id, self.fence)

    def save_bytes(self, name: str, data: bytes, kind: ArtifactKind) -> str:
        """Write an artifact of this attempt atomically and record it (fenced) with its checksum."""
        stored = self.store.write_bytes(f"{self.attempt_dir()}/{name}", data)
        with self.db.session() as s:
            repo.add_artifact(
                s,
                self.run_id,
                fence=self.fence,
                kind=kind,
                path=stored.path,
                sha256=stored.sha256,
                size=stored.size,
            )
        return stored.path

    def register_file(self, relpath: str, kind: ArtifactKind) -> None:
        """Store and record (fenced) a file that something else (the report) wrote at its scratch path."""
        stored = self.store.store_scratch(relpath)
        with self.db.session() as s:
            repo.add_artifact(
                s,
                self.run_id,
                fence=self.fence,
                kind=kind,
                path=stored.path,
                sha256=stored.sha256,
                size=stored.size,
            )
