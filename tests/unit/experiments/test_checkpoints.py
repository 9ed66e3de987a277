"""The checkpoint commit protocol: state.json names a complete model file, whatever moment a kill hits."""

from __future__ import annotations

from pathlib import Path

import keras

from worker.experiments.checkpoints import (
    CheckpointState,
    checkpoint_model_path,
    load_checkpoint_model,
    read_state,
    save_checkpoint,
)


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def _state(epoch: int) -> CheckpointState:
    return CheckpointState("h", epoch, "train", optimizer_steps=0, phase_start_steps=0)


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None and checkpoint_model_path(tmp_path) is None


def test_each_commit_names_its_own_model_and_drops_older_ones(tmp_path: Path) -> None:
    model = _model()
    save_checkpoint(tmp_path, model, _state(1))
    save_checkpoint(tmp_path, model, _state(2))
    assert checkpoint_model_path(tmp_path) == tmp_path / "model-e0002.keras"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-e0002.keras", "state.json"]


def test_a_kill_before_the_commit_leaves_the_previous_epoch_usable(tmp_path: Path) -> None:
    model = _model()
    save_checkpoint(tmp_path, model, _state(1))
    # What a SIGKILL between "model of epoch 2 written" and "state.json committed" leaves behind:
    model.save(tmp_path / "model-e0002.keras")
    (tmp_path / ".state.json.999.tmp.json").write_text("{half")
    state = read_state(tmp_path)
    assert state is not None and state.epoch == 1
    assert checkpoint_model_path(tmp_path) == tmp_path / "model-e0001.keras"
    assert load_checkpoint_model(tmp_path, state) is not None
    save_checkpoint(tmp_path, model, _state(2))  # the resumed run redoes epoch 2 and cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-e0002.keras", "state.json"]
