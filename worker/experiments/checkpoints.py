"""A training's checkpoint folder: one immutable pair of files per committed epoch.

Layout of ``checkpoint_dir``::

    model-e0007.keras   the compiled model after epoch 7, optimizer state included
    state-e0007.json    {"version", "spec_hash", "epoch", "phase", "optimizer_steps", "phase_start_steps",
                         "model_file", "history": [EpochRecord.to_dict(), ...]}

Each epoch's model is written under a temporary name and renamed; then its state file is written the same
way. A state file therefore always names a complete model file, and neither is ever rewritten: a kill at
any moment leaves the previous epoch's pair intact. Older pairs are removed only by :func:`prune`, which
the trainer calls after the caller accepted the new epoch (for a worker: after the database recorded it
as the run's checkpoint). So a file some other process may still rely on, because the database names it,
is never deleted by an attempt whose commit was refused.

Every folder belongs to one writer (a worker gives each attempt its own). Standalone use (tests, benches)
resumes from the newest pair in the folder (:func:`latest_state_file`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.disk import disk_full_message, is_disk_full
from contract.records import EpochRecord
from worker.experiments.errors import ExperimentError

if TYPE_CHECKING:
    import keras

STATE_VERSION = 3


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


def model_file_name(epoch: int) -> str:
    return f"model-e{epoch:04d}.keras"


def state_file_name(epoch: int) -> str:
    return f"state-e{epoch:04d}.json"


def read_state_file(path: Path) -> CheckpointState:
    """The state saved in one state file (:class:`ExperimentError` naming it when unreadable)."""
    path = Path(path)
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
    except FileNotFoundError:
        raise ExperimentError(f"{path}: checkpoint state file is missing") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable checkpoint state ({type(exc).__name__}: {exc})") from None


def latest_state_file(checkpoint_dir: Path) -> Path | None:
    """The newest committed state file in the folder (one whose model file exists), or ``None``."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("state-e*.json"), reverse=True):
        if (folder / read_state_file(path).model_file).is_file():
            return path
    return None


def read_state(checkpoint_dir: Path) -> CheckpointState | None:
    """The newest saved state in the folder, or ``None`` when it holds no checkpoint yet."""
    path = latest_state_file(checkpoint_dir)
    return read_state_file(path) if path else None


def read_checkpoint_history(checkpoint_dir: Path) -> list[EpochRecord]:
    """All epochs recorded in ``checkpoint_dir`` so far (empty when there is no checkpoint)."""
    state = read_state(Path(checkpoint_dir))
    return list(state.history) if state else []


def checkpoint_model_path(checkpoint_dir: Path) -> Path | None:
    """The model file of the newest committed epoch in the folder, or ``None`` when there is none."""
    state = read_state(Path(checkpoint_dir))
    return Path(checkpoint_dir) / state.model_file if state else None


def model_path_of(state_file: Path) -> Path:
    """The model file a state file names (they sit side by side)."""
    return Path(state_file).parent / read_state_file(state_file).model_file


def _replace_atomically(folder: Path, final: str, write: Any, needed: int) -> None:
    """``write`` the file under a temporary name, fsync, rename. A write that fails removes its temporary
    file (a partial model can take tens of MB, and would be left for every retry to trip over); one that
    found the disk full says so in one line, with ``needed`` (about the file's size) and what is free."""
    tmp = folder / f".{final}.{os.getpid()}.tmp{Path(final).suffix}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # first: the message then tells what is free without it
        if is_disk_full(exc):
            raise ExperimentError(disk_full_message(folder, needed)) from None
        raise


def save_checkpoint(checkpoint_dir: Path, model: keras.Model, state: CheckpointState) -> Path:
    """Write the epoch's model, then the state file naming it; return the state file's path."""
    folder = Path(checkpoint_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise ExperimentError(disk_full_message(folder.parent, model_bytes(model))) from None
        raise
    _replace_atomically(folder, state.model_file, model.save, model_bytes(model))
    payload = json.dumps(state.to_dict(), indent=1)
    name = state_file_name(state.epoch)
    _replace_atomically(folder, name, lambda path: Path(path).write_text(payload), len(payload))
    return folder / name


def model_bytes(model: keras.Model) -> int:
    """About what ``model.save`` writes: every weight and optimizer variable (the config is small)."""
    variables = [*model.weights, *(model.optimizer.variables if model.optimizer is not None else ())]
    return sum(math.prod(v.shape) * _itemsize(v.dtype) for v in variables) + 100_000


def _itemsize(dtype: Any) -> int:
    import numpy as np

    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:
        return 4


def prune(checkpoint_dir: Path, keep: CheckpointState) -> None:
    """Remove every other epoch's files (and temporary files of killed writers) from this folder."""
    folder = Path(checkpoint_dir)
    wanted = {keep.model_file, state_file_name(keep.epoch)}
    for old in [*folder.glob("model-e*.keras"), *folder.glob("state-e*.json")]:
        if old.name not in wanted:
            old.unlink(missing_ok=True)
    for leftover in folder.glob(".*.tmp*"):
        if f".{os.getpid()}." not in leftover.name:
            leftover.unlink(missing_ok=True)


def load_checkpoint_model(state_file: Path, state: CheckpointState) -> keras.Model:
    """The compiled model a state file names, optimizer state restored, checked against ``state``."""
    import keras

    path = Path(state_file).parent / state.model_file
    if not path.is_file():
        raise ExperimentError(f"{path}: missing although {state_file} records epoch {state.epoch}")
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt zip or config: one clear message
        raise ExperimentError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    steps = optimizer_iterations(model)
    if state.phase_start_steps + steps != state.optimizer_steps:
        raise ExperimentError(
            f"{path}: optimizer is at step {state.phase_start_steps + steps} but {state_file} says "
            f"{state.optimizer_steps}; the checkpoint is inconsistent, delete the folder to restart"
        )
    return model


def optimizer_iterations(model: keras.Model) -> int:
    """The optimizer's step counter as a Python int (any backend)."""
    import keras

    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
