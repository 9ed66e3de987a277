"""The two knobs of the `explain` plan: BatchNorm frozen after unfreezing, and augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from contract.specs import SpecError, TrainSpec, spec_hash
from worker.experiments.data import Cifar10, load_cifar10
from worker.experiments.models import base_of, build_model, freeze_batchnorm, weights_file_name
from worker.experiments.regimes import train, train_spec_hash

FROZEN_BN = TrainSpec(
    regime="finetune",
    seed=3,
    alpha=0.25,
    batch_size=32,
    lr=1e-3,
    head_epochs=1,
    tune_epochs=2,
    tune_lr=5e-4,
    tune_bn="frozen",
)


@pytest.fixture(scope="module")
def data(cifar_folder: Path) -> Cifar10:
    return load_cifar10(cifar_folder)


def _pretrained_bn(weights_dir: Path, name: str) -> list[np.ndarray]:
    reference = keras.applications.MobileNet(
        input_shape=(224, 224, 3),
        alpha=0.25,
        include_top=False,
        weights=str(weights_dir / weights_file_name(0.25)),
    )
    return reference.get_layer(name).get_weights()


def test_seed_defaults_leave_the_stored_spec_and_identity_unchanged() -> None:
    spec = TrainSpec(regime="finetune", seed=0)
    stored = spec.to_dict()
    assert "tune_bn" not in stored and "augment" not in stored
    old_style = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("tune_bn", "augment")}
    assert stored == old_style  # a checkpoint or an earlier run of the seed's way still matches
    assert train_spec_hash(spec) == spec_hash("train", old_style, "")
    changed = dataclasses.replace(spec, tune_bn="frozen", augment=True)
    assert changed.to_dict()["tune_bn"] == "frozen" and changed.to_dict()["augment"] is True
    assert TrainSpec.from_dict(changed.to_dict()) == changed
    assert train_spec_hash(changed) != train_spec_hash(spec)


@pytest.mark.parametrize(
    ("change", "field"), [({"tune_bn": "inference"}, "tune_bn"), ({"augment": 1}, "augment")]
)
def test_bad_knob_values_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        TrainSpec(regime="finetune", seed=0, **change).validate()  # type: ignore[arg-type]
    assert info.value.field == field


def test_augmentation_is_active_in_training_only() -> None:
    keras.utils.set_random_seed(0)
    plain = build_model(alpha=0.25, input_size=32, weights="none")
    augmented = build_model(alpha=0.25, input_size=32, weights="none", augment=True)
    augmented.set_weights(plain.get_weights())  # augmentation layers have no weights
    x = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3)).astype(np.float32)
    same = keras.ops.convert_to_numpy(augmented(x, training=False))
    np.testing.assert_allclose(same, keras.ops.convert_to_numpy(plain(x, training=False)), atol=1e-6)
    shifted = keras.ops.convert_to_numpy(augmented.get_layer("shift")(x, training=True))
    flipped = keras.ops.convert_to_numpy(augmented.get_layer("flip")(x, training=True))
    assert not np.array_equal(shifted, x) and not np.array_equal(flipped, x)
    # Whole-pixel shifts with black fill: every value is one of the image's own values or 0.
    assert set(np.unique(shifted[0])) <= set(np.unique(x[0])) | {0.0}


def test_freeze_batchnorm_freezes_only_batchnorm() -> None:
    base = base_of(build_model(alpha=0.25, input_size=32, weights="none"))
    base.trainable = True
    n = freeze_batchnorm(base)
    bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert n == len(bn) == 27  # MobileNet v1: conv1 + 13 x (depthwise, pointwise)
    assert all(not layer.trainable for layer in bn)
    assert base.get_layer("conv_pw_13").trainable and base.get_layer("conv1").trainable


@pytest.mark.slow
def test_frozen_batchnorm_keeps_imagenet_statistics_across_a_resume(
    data: Cifar10, weights_dir: Path, tmp_path: Path
) -> None:
    """Stopped after the first tune epoch and resumed: BatchNorm (statistics, scale, offset) is still the
    ImageNet one at the end while the convolutions trained; the seed's way changes the statistics."""
    first = train(FROZEN_BN, data, tmp_path, weights_dir=str(weights_dir), should_stop=lambda: True)
    assert first.epochs_completed == 1
    stop_after_tune_1 = iter([True])
    second = train(FROZEN_BN, data, tmp_path, should_stop=lambda: next(stop_after_tune_1, False))
    assert second.epochs_completed == 2 and second.stopped
    final = train(FROZEN_BN, data, tmp_path)
    assert final.epochs_completed == 3 and [r.phase for r in final.history] == ["head", "tune", "tune"]

    model = keras.models.load_model(final.checkpoint_path)
    base = base_of(model)
    for name in ("conv1_bn", "conv_pw_13_bn"):
        assert not base.get_layer(name).trainable
        for got, want in zip(
            base.get_layer(name).get_weights(), _pretrained_bn(weights_dir, name), strict=True
        ):
            np.testing.assert_array_equal(got, want)
    conv = base.get_layer("conv_pw_13").get_weights()[0]
    assert not np.array_equal(conv, _pretrained_bn(weights_dir, "conv_pw_13")[0])

    seed_way = train(
        dataclasses.replace(FROZEN_BN, tune_bn="batch"),
        data,
        tmp_path / "batch",
        weights_dir=str(weights_dir),
    )
    moving_mean = (
        base_of(keras.models.load_model(seed_way.checkpoint_path)).get_layer("conv_pw_13_bn").get_weights()[2]
    )
    assert not np.array_equal(moving_mean, _pretrained_bn(weights_dir, "conv_pw_13_bn")[2])


@pytest.mark.slow
def test_augmented_upscaled_training_runs_and_resumes(
    data: Cifar10, weights_dir: Path, tmp_path: Path
) -> None:
    spec = TrainSpec(regime="imagenet", seed=1, alpha=0.25, input_size=48, epochs=2, lr=1e-3, augment=True)
    stopped = train(spec, data, tmp_path, weights_dir=str(weights_dir), should_stop=lambda: True)
    assert stopped.epochs_completed == 1
    done = train(spec, data, tmp_path)
    assert done.epochs_completed == 2 and done.history[-1].val_accuracy is not None
    model = keras.models.load_model(done.checkpoint_path)
    assert model.get_layer("shift") is not None and base_of(model).input_shape == (None, 48, 48, 3)
