"""convlab's results from Python (a notebook, a script), without the CLI.

    from orchestrator import api

    lab = api.connect()                   # the database the CLI uses (CONVLAB_HOME, CONVLAB_DATABASE_URL)
    sweep = lab.sweep()                   # the latest sweep, or lab.sweep("s-...")
    for run in sweep.runs:                # its trainings, in the sweep's order
        print(run.label, run.status, run.final_val_accuracy, run.settings["lr"])
    run = sweep.run("imagenet")           # by label (or run id)
    run.history                           # [{"epoch": 1, "loss": ..., "val_accuracy": ..., ...}, ...]
    model = run.load_model()              # keras.saving.load_model(run.model_path)
    sweep.frame()                         # pandas.DataFrame: one row per run and epoch (needs pandas)

Importing this module loads neither TensorFlow nor Keras: only :meth:`Training.load_model` imports Keras.
Everything is read once, in one short read-only transaction, and returned as plain values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from contract.settings import Settings, load_settings
from orchestrator import export
from orchestrator.results import SweepResults, TrainingResult, load_sweep, model_path
from storage.models import RunStatus
from storage.models import Sweep as SweepRow

__all__ = ["Lab", "Sweep", "Training", "connect"]


@dataclass(frozen=True)
class Training:
    """One training: its settings (the stored spec), its epochs and its trained model."""

    id: str
    label: str
    status: RunStatus
    seed: int
    settings: dict[str, Any]
    history: list[dict[str, Any]]  # one dict per epoch, EpochRecord's fields
    # A verified local .keras file (from an object store: downloaded into this host's cache when the
    # sweep is loaded); None until a checkpoint exists.
    model_path: Path | None
    reused_from: str | None  # the earlier identical run whose results these are (a cached run)

    @property
    def final_val_accuracy(self) -> float | None:
        values = [e["val_accuracy"] for e in self.history if e["val_accuracy"] is not None]
        return values[-1] if values else None

    @property
    def best_val_accuracy(self) -> float | None:
        values = [e["val_accuracy"] for e in self.history if e["val_accuracy"] is not None]
        return max(values) if values else None

    def load_model(self, **kwargs: Any) -> Any:
        """The trained model, by ``keras.saving.load_model`` (keyword arguments passed on); imports Keras."""
        if self.model_path is None:
            raise FileNotFoundError(f"run {self.id} ({self.status}) has no trained model yet")
        import keras

        return keras.saving.load_model(self.model_path, **kwargs)


@dataclass(frozen=True)
class Sweep:
    id: str
    plan: str
    profile: str
    overrides: dict[str, Any]
    code_version: str
    created_at: datetime | None
    runs: list[Training]
    _results: SweepResults = dataclasses.field(repr=False, compare=False)

    def run(self, label_or_id: str, seed: int | None = None) -> Training:
        """The training with this label (the first seed, or ``seed``) or run id."""
        for t in self.runs:
            if t.id == label_or_id or (t.label == label_or_id and seed in (None, t.seed)):
                return t
        labels = ", ".join(dict.fromkeys(t.label for t in self.runs)) or "none"
        raise KeyError(f"no training {label_or_id!r} in sweep {self.id}; its labels: {labels}")

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per run and epoch, with the run's settings as ``spec.<key>`` (as ``export``)."""
        return export.rows(self._results)

    def frame(self) -> Any:
        """:meth:`rows` as a ``pandas.DataFrame`` (pandas is not a dependency of convlab)."""
        try:
            import pandas
        except ImportError:
            raise ImportError(
                "Sweep.frame() needs pandas (pip install pandas); rows() needs nothing"
            ) from None
        return pandas.DataFrame(self.rows(), columns=export.columns(self._results))


class Lab:
    """A convlab database and its artifacts. Get one from :func:`connect`."""

    def __init__(self, settings: Settings) -> None:
        from storage.db import get_database
        from storage.stores import open_store

        self.settings = settings
        self._db = get_database(settings)
        self._store = open_store(settings)

    def sweeps(self) -> list[str]:
        """Every sweep's id, newest first."""
        from sqlalchemy import select

        with self._db.session(readonly=True) as s:
            return list(
                s.scalars(select(SweepRow.id).order_by(SweepRow.created_at.desc(), SweepRow.id.desc()))
            )

    def sweep(self, sweep_id: str | None = None) -> Sweep:
        """Sweep ``sweep_id`` (default: the latest) with its trainings."""
        with self._db.session(readonly=True) as s:
            results = load_sweep(s, sweep_id)
        return Sweep(
            id=results.id,
            plan=results.plan,
            profile=results.profile,
            overrides=dict(results.overrides),
            code_version=results.code_version,
            created_at=results.created_at,
            runs=[self._training(t) for t in results.trainings],
            _results=results,
        )

    def __iter__(self) -> Iterator[Sweep]:
        return (self.sweep(i) for i in self.sweeps())

    def _recorded(self, run_id: str) -> dict[str, str]:
        """path -> sha256 of the run's stored files."""
        from storage import repository as repo

        with self._db.session(readonly=True) as s:
            return {a.path: a.sha256 for a in repo.artifacts_of(s, run_id)}

    def _training(self, t: TrainingResult) -> Training:
        return Training(
            id=t.run_id,
            label=t.label,
            status=t.status,
            seed=t.seed,
            settings=dict(t.spec),
            history=t.history(),
            model_path=model_path(self._store, t.checkpoint, self._recorded(t.source_id)),
            reused_from=t.source_id if t.reused else None,
        )


def connect(home: str | Path | None = None, *, database_url: str | None = None) -> Lab:
    """The database and artifacts the CLI would use here (``CONVLAB_HOME``, ``CONVLAB_DATABASE_URL``), or
    those under ``home`` / at ``database_url``. A SQLite database that does not exist is an error, not
    a new empty one."""
    settings = load_settings()
    if home is not None:
        settings = dataclasses.replace(settings, home=Path(home).absolute())
    if database_url is not None:
        settings = dataclasses.replace(settings, database_url_override=database_url)
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(
            f"no convlab database at {url.removeprefix('sqlite:///')}: pass home= (the folder holding "
            "convlab.db, ./convlab-runs by default) or set CONVLAB_HOME"
        )
    return Lab(settings)
