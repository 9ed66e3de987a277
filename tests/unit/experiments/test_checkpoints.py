"""The checkpoint commit protocol: a state file names a complete model file, whatever moment a kill hits,
and nothing is pruned until the caller accepted the newer epoch."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest

from worker.experiments.checkpoints import (
    CheckpointState,
    checkpoint_model_path,
    latest_state_file,
    load_checkpoint_model,
    model_path_of,
    prune,
    read_state,
    read_state_file,
    save_checkpoint,
)
from worker.experiments.errors import ExperimentError


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def _state(epoch: int) -> CheckpointState:
    return CheckpointState("h", epoch, "train", optimizer_steps=0, phase_start_steps=0)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None and checkpoint_model_path(tmp_path) is None
    assert latest_state_file(tmp_path / "missing") is None


def test_each_epoch_is_its_own_immutable_pair_until_pruned(tmp_path: Path) -> None:
    model = _model()
    first = save_checkpoint(tmp_path, model, _state(1))
    second = save_checkpoint(tmp_path, model, _state(2))
    assert (first.name, second.name) == ("state-e0001.json", "state-e0002.json")
    # Saving epoch 2 removed nothing: epoch 1 may still be the one the database names.
    assert _names(tmp_path) == [
        "model-e0001.keras",
        "model-e0002.keras",
        "state-e0001.json",
        "state-e0002.json",
    ]
    assert latest_state_file(tmp_path) == second and model_path_of(second) == tmp_path / "model-e0002.keras"
    prune(tmp_path, keep=_state(2))
    assert _names(tmp_path) == ["model-e0002.keras", "state-e0002.json"]


def test_a_kill_before_the_state_file_leaves_the_previous_epoch_usable(tmp_path: Path) -> None:
    model = _model()
    save_checkpoint(tmp_path, model, _state(1))
    # What a SIGKILL between "model of epoch 2 written" and "its state file committed" leaves behind:
    model.save(tmp_path / "model-e0002.keras")
    (tmp_path / ".state-e0002.json.999.tmp.json").write_text("{half")
    state = read_state(tmp_path)
    assert state is not None and state.epoch == 1
    assert checkpoint_model_path(tmp_path) == tmp_path / "model-e0001.keras"
    assert load_checkpoint_model(tmp_path / "state-e0001.json", state) is not None
    save_checkpoint(tmp_path, model, _state(2))  # the resumed run redoes epoch 2 ...
    prune(tmp_path, keep=_state(2))  # ... and cleans up once it is accepted
    assert _names(tmp_path) == ["model-e0002.keras", "state-e0002.json"]


def test_an_unreadable_state_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "state-e0001.json").write_text("{half")
    with pytest.raises(ExperimentError, match="state-e0001.json"):
        read_state_file(tmp_path / "state-e0001.json")
    with pytest.raises(ExperimentError, match="missing"):
        read_state_file(tmp_path / "state-e0009.json")
