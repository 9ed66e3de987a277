"""A training's checkpoint folder: ``model.keras`` (weights + optimizer state) and ``state.json``.

Layout of ``checkpoint_dir``::

    model-e0007.keras  the compiled model after epoch 7 (the last completed one), optimizer state included
    state.json         {"version", "spec_hash", "epoch", "phase", "optimizer_steps", "phase_start_steps",
                        "model_file", "history": [EpochRecord.to_dict(), ...]}

``state.json`` is the commit point. Each epoch's model is written under a temporary name and renamed to
its own file; then ``state.json`` is written the same way, naming that file; only then are older model
files removed. A kill at any moment therefore leaves a ``state.json`` and the model it names, both
complete, and a resumed run continues from exactly that epoch: nothing is lost and nothing needs repair.
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

STATE_FILE = "state.json"
STATE_VERSION = 2


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

    @property
    def model_file(self) -> str:
        return model_file_name(self.epoch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "spec_hash": self.spec_hash,
            "epoch": self.epoch,
            "phase": self.phase,
            "optimizer_steps": self.optimizer_steps,
            "phase_start_steps": self.phase_start_steps,
            "model_file": self.model_file,
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


def model_file_name(epoch: int) -> str:
    return f"model-e{epoch:04d}.keras"


def checkpoint_model_path(checkpoint_dir: Path) -> Path | None:
    """The model file of the last committed epoch, or ``None`` when there is no checkpoint."""
    state = read_state(Path(checkpoint_dir))
    return Path(checkpoint_dir) / state.model_file if state else None


def _replace_atomically(folder: Path, final: str, write: Any) -> None:
    tmp = folder / f".{final}.{os.getpid()}.tmp{Path(final).suffix}"
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / final)


def save_checkpoint(checkpoint_dir: Path, model: keras.Model, state: CheckpointState) -> None:
    """Write the epoch's model to its own file, commit ``state.json`` naming it, then drop older models."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _replace_atomically(folder, state.model_file, model.save)
    payload = json.dumps(state.to_dict(), indent=1)
    _replace_atomically(folder, STATE_FILE, lambda path: Path(path).write_text(payload))
    for old in folder.glob("model-e*.keras"):
        if old.name != state.model_file:
            old.unlink(missing_ok=True)
    for leftover in folder.glob(".*.tmp*"):  # from a process killed mid-write
        if f".{os.getpid()}." not in leftover.name:
            leftover.unlink(missing_ok=True)


def load_checkpoint_model(checkpoint_dir: Path, state: CheckpointState) -> keras.Model:
    """The compiled model of the checkpoint, optimizer state restored, checked against ``state``."""
    import keras

    path = Path(checkpoint_dir) / state.model_file
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
            f"{state.optimizer_steps}; the checkpoint is inconsistent, delete the folder to restart"
        )
    return model


def optimizer_iterations(model: keras.Model) -> int:
    """The optimizer's step counter as a Python int (any backend)."""
    import keras

    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
