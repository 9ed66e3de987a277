"""A training's checkpoint folder: ``model.keras`` (weights + optimizer state) and ``state.json``.

Layout of ``checkpoint_dir``::

    model.keras   the compiled model after the last completed epoch, optimizer state included
    state.json    {"version", "spec_hash", "epoch", "phase", "optimizer_steps", "phase_start_steps",
                   "history": [EpochRecord.to_dict(), ...]}

Both files are written to a temporary name in the same folder and moved into place with ``os.replace``,
model first, so a reader never sees a half-written file. (A kill between the two renames leaves a model one
epoch ahead of ``state.json``: :func:`load_checkpoint_model` detects it by the optimizer's step count.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.experiments.errors import ExperimentError
from worker.experiments.records import EpochRecord

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class CheckpointState:
    """What ``state.json`` holds.

    ``optimizer_steps`` counts the steps of all phases; ``phase_start_steps`` those of earlier phases (a new
    phase starts a fresh optimizer, whose own counter restarts at zero).
    """

    spec_hash: str
    epoch: int
    phase: str
    optimizer_steps: int
    phase_start_steps: int
    history: tuple[EpochRecord, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "spec_hash": self.spec_hash,
            "epoch": self.epoch,
            "phase": self.phase,
            "optimizer_steps": self.optimizer_steps,
            "phase_start_steps": self.phase_start_steps,
            "history": [r.to_dict() for r in self.history],
        }


def read_state(checkpoint_dir: Path) -> CheckpointState | None:
    """The saved state, or ``None`` when the folder holds no checkpoint yet."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return CheckpointState(
            spec_hash=str(raw["spec_hash"]),
            epoch=int(raw["epoch"]),
            phase=str(raw["phase"]),
            optimizer_steps=int(raw["optimizer_steps"]),
            phase_start_steps=int(raw["phase_start_steps"]),
            history=tuple(EpochRecord.from_dict(r) for r in raw["history"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable checkpoint state ({type(exc).__name__}: {exc})") from None


def read_checkpoint_history(checkpoint_dir: Path) -> list[EpochRecord]:
    """All epochs recorded in ``checkpoint_dir`` so far (empty when there is no checkpoint)."""
    state = read_state(Path(checkpoint_dir))
    return list(state.history) if state else []


def save_checkpoint(checkpoint_dir: Path, model: keras.Model, state: CheckpointState) -> None:
    """Atomically write the model (with optimizer state), then the state that describes it."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp_model = folder / f".model.{os.getpid()}.tmp.keras"
    model.save(tmp_model)
    tmp_state = folder / f".state.{os.getpid()}.tmp.json"
    tmp_state.write_text(json.dumps(state.to_dict(), indent=1))
    os.replace(tmp_model, folder / MODEL_FILE)
    os.replace(tmp_state, folder / STATE_FILE)


def load_checkpoint_model(checkpoint_dir: Path, state: CheckpointState) -> keras.Model:
    """The compiled model of the checkpoint, optimizer state restored, checked against ``state``."""
    import keras

    path = Path(checkpoint_dir) / MODEL_FILE
    if not path.is_file():
        raise ExperimentError(f"{path}: missing although {STATE_FILE} records epoch {state.epoch}")
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt zip or config: one clear message
        raise ExperimentError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    steps = optimizer_iterations(model)
    if state.phase_start_steps + steps != state.optimizer_steps:
        raise ExperimentError(
            f"{path}: optimizer is at step {state.phase_start_steps + steps} but {STATE_FILE} says "
            f"{state.optimizer_steps} (interrupted between the two writes); delete the folder to restart"
        )
    return model


def optimizer_iterations(model: keras.Model) -> int:
    """The optimizer's step counter as a Python int (any backend)."""
    import keras

    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
