"""The finetune head phase trained on features computed once equals the plain path (issue 22).

The data is the tiny learnable CIFAR-10 (200 training, 100 validation images). The "ImageNet" weights are
not the shared fixture's: a random-init base passes almost nothing of an image through 27 BatchNorm layers
at their default statistics (its pooled features vary across images by about 1e-8), so a head on them
learns nothing and a wrong feature path could go unnoticed. Here the base's BatchNorm moving statistics are
set to the batch statistics of these images (one training-mode pass with momentum 0), as a pretrained base's
are to its data: its features then differ per image and the head learns the colours within a few epochs.

Tolerance (``_close``): both paths run the same Keras train step on the same batches in the same order with
the same optimizer, so the only difference is where the features are computed: inside the train step at
batch 32, or once by ``predict`` at batch ``FEATURE_BATCH``. Convolutions may block differently by batch
size, so a feature may differ by a few float32 ulps (relative 1e-7), which three epochs of Adam on a linear
head do not amplify beyond relative 1e-5 of the loss. Measured on the development CPU: equal to the last
bit on TensorFlow, to 1 ulp on JAX (the tune phase after it: see its test). Losses must agree to relative
1e-5; accuracies to one image (a prediction sitting on a tie to within 1e-7 could flip; none did).

A wrong feature path is far further off: :func:`test_a_wrong_feature_path_would_fail_the_comparison` runs
one (BatchNorm in training mode while the features are computed) and requires that its first epoch
already misses the tolerance by 100x. Measured: its first epoch's loss is 1.3 % off and its val_loss 4.2 %
(1,300x and 4,200x the tolerance).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from contract.specs import TrainSpec, VisualizeSpec
from worker.experiments import head_features
from worker.experiments.checkpoints import model_file_name, optimizer_iterations, read_state_file
from worker.experiments.data import Cifar10, load_cifar10
from worker.experiments.models import base_of, build_model, weights_file_name
from worker.experiments.regimes import EpochRecord, TrainResult, train
from worker.experiments.visualize import visualize

pytestmark = pytest.mark.slow

SPEC = TrainSpec(
    regime="finetune", seed=4, alpha=0.25, batch_size=32, lr=1e-2, head_epochs=3, tune_epochs=1, tune_lr=5e-4
)
STEPS_PER_EPOCH = 7  # ceil(200 / 32)
RTOL = 1e-5


@pytest.fixture(scope="module")
def data(cifar_folder: Path) -> Cifar10:
    return load_cifar10(cifar_folder)


@pytest.fixture(scope="module")
def calibrated_weights(data: Cifar10, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init base whose BatchNorm statistics are those of the tiny images (see the docstring)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode call then leaves exactly that batch's statistics
    base(data.x_train.astype(np.float32) / 127.5 - 1.0, training=True)
    folder = tmp_path_factory.mktemp("calibrated")
    base.save(str(folder / weights_file_name(0.25)))
    return folder


def _run(
    data: Cifar10,
    folder: Path,
    weights: Path,
    *,
    features: bool,
    stop: bool = False,
    head_end: list[np.ndarray] | None = None,
) -> TrainResult:
    """``stop``: end after this call's first epoch (with an empty folder: after head epoch 1).
    ``head_end``: filled with the classifier's weights of the head phase's last checkpoint."""

    def keep_head(record: EpochRecord) -> None:
        if head_end is not None and record.epoch == SPEC.head_epochs:
            saved = keras.models.load_model(folder / model_file_name(record.epoch))
            head_end.extend(saved.get_layer("classifier").get_weights())

    return train(
        SPEC,
        data,
        folder,
        weights_dir=str(weights),
        head_features=features,
        on_epoch=keep_head,
        should_stop=lambda: stop,
        loop="fit",
    )


@pytest.fixture(scope="module")
def runs(data: Cifar10, calibrated_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both paths, each stopped after the first head epoch and resumed from its checkpoint on disk: the
    resumed attempt trains head epochs 2-3 (on features, from a loaded optimizer) and the tune epoch."""
    out: dict[str, Any] = {}
    for name, features in (("plain", False), ("features", True)):
        folder = tmp_path_factory.mktemp(name)
        first = _run(data, folder, calibrated_weights, features=features, stop=True)
        out[f"{name}_first_state"] = read_state_file(first.state_path)  # the resumed run prunes it
        out[f"{name}_head_model"] = keras.models.load_model(first.checkpoint_path)
        head_end: list[np.ndarray] = []
        out[f"{name}_head_end"] = head_end
        out[name] = _run(data, folder, calibrated_weights, features=features, head_end=head_end)
    return out


def _metrics(record: EpochRecord) -> tuple[Any, ...]:
    return (record.loss, record.accuracy, record.val_loss, record.val_accuracy)


def _close(got: EpochRecord, want: EpochRecord, *, n_train: int, n_val: int) -> bool:
    assert got.val_loss is not None and want.val_loss is not None
    assert got.val_accuracy is not None and want.val_accuracy is not None
    return (
        (got.epoch, got.phase) == (want.epoch, want.phase)
        and bool(np.isclose(got.loss, want.loss, rtol=RTOL, atol=0))
        and bool(np.isclose(got.val_loss, want.val_loss, rtol=RTOL, atol=0))
        and abs(got.accuracy - want.accuracy) <= 1 / n_train + 1e-7
        and abs(got.val_accuracy - want.val_accuracy) <= 1 / n_val + 1e-7
    )


def test_the_head_learns_so_the_comparison_means_something(runs: dict[str, Any]) -> None:
    head = [r for r in runs["plain"].history if r.phase == "head"]
    # Measured: loss 2.64 -> 1.43, accuracy 0.08 -> 0.56 over the three head epochs.
    assert head[-1].loss < 0.7 * head[0].loss and head[-1].accuracy > 0.4, [_metrics(r) for r in head]


def test_every_epoch_equals_the_plain_path(runs: dict[str, Any], data: Cifar10) -> None:
    plain, features = runs["plain"], runs["features"]
    assert [(r.epoch, r.phase) for r in features.history] == [
        (1, "head"),
        (2, "head"),
        (3, "head"),
        (4, "tune"),
    ]
    for got, want in zip(features.history[:-1], plain.history[:-1], strict=True):
        assert _close(got, want, n_train=len(data.x_train), n_val=len(data.x_val)), (got, want)
    assert features.optimizer_steps == plain.optimizer_steps == 4 * STEPS_PER_EPOCH


def test_the_tune_phase_starts_from_the_same_head_and_then_trains_the_same(
    runs: dict[str, Any], data: Cifar10
) -> None:
    """The head the tune phase starts from equals the plain path's to a few ulps. Where it is bit-identical
    (TensorFlow on CPU, measured) the tune epoch must be too, to RTOL. Where it is not (JAX on CPU: XLA
    compiles the base's forward pass differently inside the train step than in ``predict``, 1 ulp, and so
    does a change of batch size), the tune epoch is not compared: its first fresh-Adam steps normalize each
    gradient by its own size, so a 1-ulp change of a near-zero gradient can flip a step of ``tune_lr``
    across all of the base's weights, and one epoch ends about 1 % apart (measured on JAX: 0.7 % of the
    loss, 1.7 % of val_loss), as the plain path itself would under any 1-ulp perturbation."""
    got, want = runs["features_head_end"], runs["plain_head_end"]
    assert len(got) == len(want) == 2
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    if all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)):
        tuned, plain = runs["features"].history[-1], runs["plain"].history[-1]
        assert _close(tuned, plain, n_train=len(data.x_train), n_val=len(data.x_val)), (tuned, plain)


def test_a_head_checkpoint_is_the_full_model_with_the_optimizer_state(runs: dict[str, Any]) -> None:
    plain, features = runs["plain_head_model"], runs["features_head_model"]
    state = runs["features_first_state"]
    assert (state.epoch, state.phase, state.optimizer_steps, state.phase_start_steps) == (
        1,
        "head",
        STEPS_PER_EPOCH,
        0,
    )
    assert optimizer_iterations(features) == optimizer_iterations(plain) == STEPS_PER_EPOCH
    assert [w.shape for w in features.weights] == [w.shape for w in plain.weights]
    assert len(features.trainable_weights) == 2 and not base_of(features).trainable
    # Paths start with the optimizer's name, numbered per process ("adam", "adam_2"): compare the rest.
    moments = [(v.path.split("/", 1)[1], v.numpy()) for v in features.optimizer.variables]
    assert [p for p, _ in moments] == [v.path.split("/", 1)[1] for v in plain.optimizer.variables]
    for (_, got), want in zip(moments, plain.optimizer.variables, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-7)
    for got, want in zip(features.weights, plain.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-7)


def test_the_final_checkpoint_visualizes(runs: dict[str, Any]) -> None:
    spec = VisualizeSpec(image="sine", seed=0, source="checkpoint", alpha=0.25, input_size=32, steps=2)
    result = visualize(
        dataclasses.replace(spec, layers=("conv_pw_13",)), checkpoint=runs["features"].checkpoint_path
    )
    assert set(result.layers) == {"conv_pw_13"}


@pytest.fixture
def wrong_features(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The feature pass with BatchNorm in training mode (batch statistics of each batch of 32)."""

    def predict(extractor: keras.Model, x: np.ndarray) -> np.ndarray:
        base = extractor.get_layer("mobilenet_base")
        base.trainable = True  # Keras 3 runs BatchNorm on batch statistics only when it is trainable
        batches = [extractor([x[i : i + 32]], training=True) for i in range(0, len(x), 32)]
        base.trainable = False
        return np.concatenate([keras.ops.convert_to_numpy(b) for b in batches]).astype(np.float32)

    monkeypatch.setattr(head_features, "_predict", predict)
    yield


def test_a_wrong_feature_path_would_fail_the_comparison(
    wrong_features: None, runs: dict[str, Any], data: Cifar10, calibrated_weights: Path, tmp_path: Path
) -> None:
    wrong = _run(data, tmp_path, calibrated_weights, features=True, stop=True).history[0]
    right = runs["plain"].history[0]
    assert not _close(wrong, right, n_train=len(data.x_train), n_val=len(data.x_val))
    assert wrong.val_loss is not None and right.val_loss is not None
    assert abs(wrong.val_loss - right.val_loss) > 100 * RTOL * right.val_loss, (wrong, right)


# ---- the decision ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> keras.Model:
    built = build_model(alpha=0.25, input_size=32, weights="none")
    base_of(built).trainable = False
    return built


def test_the_head_phase_of_the_seed_finetune_takes_the_features_path(model: keras.Model) -> None:
    decision = head_features.decide(model, SPEC, base_trainable=False)
    assert decision.use and "BatchNorm in inference mode" in decision.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"enabled": False}, "plain path asked for"),
        ({"base_trainable": True}, "the base trains"),
        ({"spec": dataclasses.replace(SPEC, augment=True)}, "augmentation"),
    ],
)
def test_what_sends_a_phase_down_the_plain_path(
    model: keras.Model, change: dict[str, Any], reason: str
) -> None:
    kwargs: dict[str, Any] = {"spec": SPEC, "base_trainable": False, **change}
    decision = head_features.decide(model, **kwargs)
    assert not decision.use and reason in decision.reason


def test_a_trainable_batchnorm_or_a_dropout_before_the_head_sends_it_down_the_plain_path(
    model: keras.Model,
) -> None:
    norm = base_of(model).get_layer("conv_pw_13_bn")
    norm.trainable = True
    try:
        decision = head_features.decide(model, SPEC, base_trainable=False)
    finally:
        norm.trainable = False
    assert not decision.use and "conv_pw_13_bn" in decision.reason

    inputs = keras.Input((8,))
    dropped = keras.layers.Dropout(0.5, name="drop")(inputs)
    toy = keras.Model(inputs, keras.layers.Dense(10, name="classifier")(dropped))
    decision = head_features.decide(toy, SPEC, base_trainable=False)
    assert not decision.use and "'drop'" in decision.reason and "Dropout" in decision.reason


def test_augmentation_layers_send_it_down_the_plain_path_whatever_the_spec_says() -> None:
    """The augmenting model's own layers are caught too, not only the spec's flag."""
    augmenting = build_model(alpha=0.25, input_size=32, weights="none", augment=True)
    base_of(augmenting).trainable = False
    spec = dataclasses.replace(SPEC, augment=False)  # a spec that lies: the layers still say no
    decision = head_features.decide(augmenting, spec, base_trainable=False)
    assert not decision.use and "RandomTranslation" in decision.reason
