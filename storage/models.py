"""Typed SQLAlchemy 2.0 models: what convlab knows about its work.

The database, not Celery's result backend, is the source of truth for run state.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Short, typeable ids; the prefix tells a sweep (``s-``) from a run (``r-``) at the CLI."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# Ended without results of its own. A failure is an error to read; a cancellation was asked for and keeps
# what it reached (a training its checkpoint): a report lists the two apart, a sweep's end names them, and
# `retry` can queue them again.
ENDED_BADLY = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
# Not ended yet: waiting for a worker or running.
UNFINISHED_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class RunKind(enum.StrEnum):
    TRAIN = "train"
    VISUALIZE = "visualize"
    REPORT = "report"


class ArtifactKind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    IMAGE = "image"
    FIGURE = "figure"
    REPORT = "report"
    LOG = "log"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones and would hand back naive datetimes that
    cannot be compared with :func:`utcnow`. Values are converted to UTC on the way in (naive ones are taken
    as UTC) and always come back aware, in UTC. On SQLite the stored text then sorts chronologically.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _str_enum(cls: type[enum.Enum]) -> Enum:
    """Stored as VARCHAR(16) holding the enum's *value* (``"queued"``), loaded back as the enum member.

    ``native_enum=False`` keeps it a plain string column on PostgreSQL too: adding a status later is a
    code change, not an ``ALTER TYPE`` migration.
    """
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("s"))
    plan: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(32))
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    code_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    runs: Mapped[list[Run]] = relationship(back_populates="sweep", order_by="Run.created_at")


class RunDependency(Base):
    """``run_id`` may start only after ``depends_on_id`` succeeded."""

    __tablename__ = "run_dependencies"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)


# The runs that compute an identity now: executed (not following another run) and queued or running. At
# most one per identity (``uq_runs_live_identity``), so two submits of one plan cannot both train it: the
# second one's insert fails and it joins the first (see storage.repository.runs).
LIVE_IDENTITY = text("reused_run_id IS NULL AND status IN ('queued', 'running')")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index(
            "uq_runs_live_identity",
            "spec_hash",
            unique=True,
            sqlite_where=LIVE_IDENTITY,
            postgresql_where=LIVE_IDENTITY,
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("r"))
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    kind: Mapped[RunKind] = mapped_column(_str_enum(RunKind))
    # A short human label: the regime (or the explain plan's variant, e.g. "imagenet+upscaled") for
    # trainings, the image kind ("random", "sine", "photo") for visualizations, "report" for the report.
    label: Mapped[str] = mapped_column(String(128), default="")
    spec: Mapped[dict[str, Any]] = mapped_column()
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[RunStatus] = mapped_column(_str_enum(RunStatus), default=RunStatus.QUEUED, index=True)
    # Set when this run takes its results from an identical run instead of being executed: one that had
    # succeeded (a cached run, created succeeded) or one queued or running (a joined run, which follows it).
    reused_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The fencing token: incremented by every claim and never decremented (unlike ``attempts``, which a
    # graceful hand-back refunds). Every write on behalf of a run names the token of the attempt making
    # it and is refused unless it is still the run's current one, so a paused or partitioned attempt that
    # lost its run can never touch its results again.
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The checkpoint the run's results stand on: the state file (relative to the artifacts root) of the
    # last epoch committed by the current attempt. The database, not a file, is the commit point.
    checkpoint: Mapped[str | None] = mapped_column(String(512), default=None)
    # Live progress inside the current epoch, written with the heartbeat (no extra writes):
    # {"epoch", "batches", "of", "images_per_second"}. Only meaningful while the run is running.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    total_epochs: Mapped[int] = mapped_column(Integer, default=0)
    last_epoch: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    device: Mapped[str | None] = mapped_column(String(255), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    # Which worker took the run's message off the broker, and when (before any task process claims it):
    # a message held by a worker that died before claiming is sent again by the reaper.
    received_at: Mapped[datetime | None] = mapped_column(default=None)
    received_by: Mapped[str | None] = mapped_column(String(255), default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    traceback: Mapped[str | None] = mapped_column(Text, default=None)
    # What executed it: Keras version and backend, framework version, Python (for provenance).
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The code ``spec_hash`` was computed for (``contract.version.code_identity`` at submit): only a worker
    # that loaded this code runs it. None for runs written before it was recorded: any worker runs them.
    code_identity: Mapped[str | None] = mapped_column(String(64), default=None)

    @property
    def results_run_id(self) -> str:
        """The run whose results count for this one: itself, or the earlier identical run it reuses."""
        return self.reused_run_id or self.id

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")
    epochs: Mapped[list[EpochMetric]] = relationship(
        back_populates="run", order_by="EpochMetric.epoch", cascade="all, delete-orphan"
    )
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="run", cascade="all, delete-orphan")


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch_metrics_run_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based, continuous across fine-tuning phases
    phase: Mapped[str] = mapped_column(String(16))  # "train", "head" or "tune"
    loss: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    images_per_second: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="epochs")


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "path", name="uq_artifacts_run_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ArtifactKind] = mapped_column(_str_enum(ArtifactKind))
    path: Mapped[str] = mapped_column(String(512))  # relative to the artifacts root
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="artifacts")


class Worker(Base):
    """A live worker process, refreshed by its heartbeat; ``orchestrator workers`` reads this table."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # celery hostname, e.g. gpu0@box
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(255))
    slots: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)
    code_identity: Mapped[str | None] = mapped_column(String(64), default=None)  # the code it loaded
