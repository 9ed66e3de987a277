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


def test_a_failed_save_removes_its_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model file half written when the save fails is not left behind (a SIGKILL's is: see gc)."""
    model = _model()
    save_checkpoint(tmp_path, model, _state(1))

    def half_then_fail(self: keras.Model, path: str | Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(keras.Model, "save", half_then_fail)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        save_checkpoint(tmp_path, model, _state(2))
    assert _names(tmp_path) == ["model-e0001.keras", "state-e0001.json"]  # no .tmp, epoch 1 intact


def test_a_save_that_finds_the_disk_full_says_so_in_one_line(tmp_path: Path) -> None:
    """On a real file system too small for the model: one line naming the folder, what the model needs
    and what is free; nothing of the attempt left taking the space."""
    from tests.filesystems import small_filesystem

    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(512), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # Adam's moments: 3x the weights, as after a step
    with small_filesystem(tmp_path / "small", 1) as small:
        folder = small / "checkpoint"
        with pytest.raises(ExperimentError) as caught:
            save_checkpoint(folder, model, _state(1))
        message = str(caught.value)
        assert "\n" not in message
        # 262,657 parameters x 4 bytes x 3 (weights, Adam's two moments) + the config's allowance.
        assert message.startswith(f"disk full under {folder} (needs ~3.3 MB, ")
        assert message.endswith(" MB free)") and not message.endswith("0.0 MB free)")
        assert _names(folder) == []
