"""Training regimes on a tiny learnable CIFAR-10 (200 images, alpha 0.25): a few seconds per run."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from contract.specs import TrainSpec, VisualizeSpec
from worker.experiments.checkpoints import (
    checkpoint_model_path,
    latest_state_file,
    optimizer_iterations,
    state_file_name,
)
from worker.experiments.data import Cifar10, load_cifar10
from worker.experiments.errors import ExperimentError
from worker.experiments.models import base_of, weights_file_name
from worker.experiments.regimes import EpochRecord, TrainResult, read_checkpoint_history, train
from worker.experiments.visualize import visualize

pytestmark = pytest.mark.slow

FINETUNE = TrainSpec(
    regime="finetune", seed=3, alpha=0.25, batch_size=32, lr=1e-3, head_epochs=1, tune_epochs=2, tune_lr=5e-4
)
SCRATCH = TrainSpec(regime="scratch", seed=5, alpha=0.25, batch_size=32, lr=1e-3, epochs=3)


@pytest.fixture(scope="module")
def data(cifar_folder: Path) -> Cifar10:
    return load_cifar10(cifar_folder)


@pytest.fixture(scope="module")
def finetune_run(
    data: Cifar10, weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One uninterrupted finetune; the checkpoint after epoch 1 (end of phase "head") is kept aside."""
    folder = tmp_path_factory.mktemp("finetune")
    ckpt, after_head = folder / "ckpt", folder / "after_head.keras"
    seen: list[EpochRecord] = []

    def sink(record: EpochRecord) -> None:
        seen.append(record)
        if record.epoch == 1:  # the checkpoint is saved before on_epoch is called
            shutil.copy(checkpoint_model_path(ckpt), after_head)

    result = train(FINETUNE, data, ckpt, weights_dir=str(weights_dir), on_epoch=sink)
    return {"result": result, "seen": seen, "after_head": after_head, "ckpt": ckpt}


@pytest.fixture(scope="module")
def scratch_runs(data: Cifar10, tmp_path_factory: pytest.TempPathFactory) -> list[TrainResult]:
    return [train(SCRATCH, data, tmp_path_factory.mktemp(f"scratch{i}")) for i in range(2)]


def test_loss_falls_on_learnable_data(scratch_runs: list[TrainResult]) -> None:
    history = scratch_runs[0].history
    assert [r.epoch for r in history] == [1, 2, 3] and {r.phase for r in history} == {"train"}
    assert history[-1].loss < history[0].loss
    assert all(r.images_per_second > 0 and r.seconds > 0 and r.lr == 1e-3 for r in history)
    assert all(r.val_loss is not None and r.val_accuracy is not None for r in history)


def test_same_seed_repeats_exactly(scratch_runs: list[TrainResult]) -> None:
    """Same spec, same process, CPU: losses and accuracies (train and validation) repeat bit for bit.

    Timings (seconds, images/s) of course do not.
    """
    first, second = (
        [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in run.history] for run in scratch_runs
    )
    assert first == second
    assert scratch_runs[0].optimizer_steps == scratch_runs[1].optimizer_steps == 3 * 7


def test_finetune_epochs_are_continuous_and_labelled(finetune_run: dict[str, Any]) -> None:
    result: TrainResult = finetune_run["result"]
    assert [(r.epoch, r.phase, r.lr) for r in finetune_run["seen"]] == [
        (1, "head", 1e-3),
        (2, "tune", 5e-4),
        (3, "tune", 5e-4),
    ]
    assert (
        result.history == tuple(finetune_run["seen"]) == tuple(read_checkpoint_history(finetune_run["ckpt"]))
    )
    assert (result.epochs_completed, result.total_epochs, result.stopped) == (3, 3, False)
    assert result.optimizer_steps == 3 * 7 and result.checkpoint_path == checkpoint_model_path(
        finetune_run["ckpt"]
    )


def test_finetune_head_phase_trains_only_the_head(finetune_run: dict[str, Any], weights_dir: Path) -> None:
    pretrained = keras.applications.MobileNet(
        input_shape=(224, 224, 3),
        alpha=0.25,
        include_top=False,
        weights=str(weights_dir / weights_file_name(0.25)),
    )
    after_head = keras.models.load_model(finetune_run["after_head"])
    assert len(after_head.trainable_weights) == 2  # Dense kernel + bias
    final = keras.models.load_model(finetune_run["result"].checkpoint_path)
    assert len(final.trainable_weights) > 2
    for name in ("conv1", "conv_pw_13", "conv_pw_13_bn"):
        want = pretrained.get_layer(name).get_weights()
        got_head = base_of(after_head).get_layer(name).get_weights()
        got_final = base_of(final).get_layer(name).get_weights()
        for a, b in zip(got_head, want, strict=True):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(got_final, want, strict=True))


def test_stop_then_resume_reports_each_epoch_once(
    finetune_run: dict[str, Any], data: Cifar10, weights_dir: Path, tmp_path: Path
) -> None:
    seen: list[int] = []
    first = train(
        FINETUNE,
        data,
        tmp_path,
        weights_dir=str(weights_dir),
        on_epoch=lambda r: seen.append(r.epoch),
        should_stop=lambda: True,
    )
    assert (first.epochs_completed, first.stopped, [r.epoch for r in first.history]) == (1, True, [1])
    second = train(
        FINETUNE, data, tmp_path, weights_dir=str(weights_dir), on_epoch=lambda r: seen.append(r.epoch)
    )
    assert seen == [1, 2, 3]
    assert (second.epochs_completed, second.stopped) == (3, False)
    assert [(r.epoch, r.phase) for r in second.history] == [(1, "head"), (2, "tune"), (3, "tune")]
    uninterrupted: TrainResult = finetune_run["result"]
    assert second.optimizer_steps == uninterrupted.optimizer_steps
    assert optimizer_iterations(keras.models.load_model(second.checkpoint_path)) == optimizer_iterations(
        keras.models.load_model(uninterrupted.checkpoint_path)
    )


def test_a_resumed_training_repeats_the_uninterrupted_epochs_exactly(
    scratch_runs: list[TrainResult], data: Cifar10, tmp_path: Path
) -> None:
    # Each epoch's order comes from (seed, epoch), so a run stopped after epoch 1 and resumed trains
    # epochs 2 and 3 on the batches the uninterrupted run used: on CPU the same numbers, bit for bit.
    first = train(SCRATCH, data, tmp_path, should_stop=lambda: True)
    assert first.epochs_completed == 1
    resumed = train(SCRATCH, data, tmp_path)
    metrics = [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in resumed.history]
    uninterrupted = [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in scratch_runs[0].history]
    assert metrics == uninterrupted


def test_complete_run_returns_immediately(finetune_run: dict[str, Any], data: Cifar10) -> None:
    def fail(record: EpochRecord) -> None:
        raise AssertionError("no epoch should run")

    again = train(FINETUNE, data, finetune_run["ckpt"], on_epoch=fail)
    assert again.history == finetune_run["result"].history and not again.stopped


def test_checkpoint_of_another_spec_is_an_error(finetune_run: dict[str, Any], data: Cifar10) -> None:
    with pytest.raises(ExperimentError, match=str(finetune_run["ckpt"])):
        train(dataclasses.replace(FINETUNE, tune_lr=1e-5), data, finetune_run["ckpt"])


def test_history_of_empty_folder_and_record_round_trip(tmp_path: Path, finetune_run: dict[str, Any]) -> None:
    assert read_checkpoint_history(tmp_path) == []
    record = finetune_run["result"].history[0]
    assert EpochRecord.from_dict(record.to_dict()) == record
    assert (finetune_run["ckpt"] / state_file_name(3)).is_file()


def test_resume_from_another_folder_leaves_it_untouched(
    finetune_run: dict[str, Any], data: Cifar10, weights_dir: Path, tmp_path: Path
) -> None:
    """How a worker's new attempt resumes: from the checkpoint the database names, in the previous
    attempt's folder, writing only into its own."""
    old, new = tmp_path / "attempt-1", tmp_path / "attempt-2"
    train(FINETUNE, data, old, weights_dir=str(weights_dir), should_stop=lambda: True)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in old.iterdir())
    resumed = train(FINETUNE, data, new, resume_from=latest_state_file(old))
    assert (resumed.epochs_completed, [r.epoch for r in resumed.history]) == (3, [1, 2, 3])
    assert sorted((p.name, p.stat().st_mtime_ns) for p in old.iterdir()) == before
    assert sorted(p.name for p in new.iterdir()) == ["model-e0003.keras", "state-e0003.json"]
    assert resumed.state_path == new / "state-e0003.json"


def test_a_refused_commit_prunes_nothing(data: Cifar10, weights_dir: Path, tmp_path: Path) -> None:
    """When on_epoch raises (the worker's database commit was refused), the previous epoch's checkpoint,
    which the database still names, must still be there."""

    class Refused(Exception):
        pass

    def refuse_epoch_2(record: EpochRecord) -> None:
        if record.epoch == 2:
            raise Refused

    with pytest.raises(Refused):
        train(FINETUNE, data, tmp_path, weights_dir=str(weights_dir), on_epoch=refuse_epoch_2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model-e0001.keras", "model-e0002.keras", "state-e0001.json", "state-e0002.json"]


def test_visualize_a_trained_checkpoint_at_another_size(finetune_run: dict[str, Any]) -> None:
    spec = VisualizeSpec(image="sine", seed=0, source="checkpoint", alpha=0.25, input_size=48, steps=2)
    result = visualize(spec, checkpoint=finetune_run["result"].checkpoint_path)
    assert set(result.layers) == {"conv_pw_12", "conv_pw_13"}
    assert all(img.shape == (48, 48, 3) and img.dtype == np.uint8 for img in result.layers.values())
