"""Keras's global state seeded and cleared as Keras's own functions do, without TensorFlow's global seed."""

from __future__ import annotations

import random
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract.specs import TrainSpec
from worker.experiments import keras_state
from worker.experiments.data import load_cifar10
from worker.experiments.regimes import train


def _draws() -> tuple[object, ...]:
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    flip = keras.layers.RandomFlip("horizontal")
    image = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    return (
        random.random(),
        float(np.random.rand()),
        keras.ops.convert_to_numpy(keras.random.uniform((3,))).tolist(),
        keras.ops.convert_to_numpy(layer.kernel).tolist(),
        keras.ops.convert_to_numpy(flip(image, training=True)).tolist(),
    )


def test_seed_draws_what_keras_set_random_seed_draws() -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(11)
    expected = _draws()
    assert keras_state.tensorflow_seed_is_set()
    keras_state.clear_session()
    tf.random.set_seed(None)
    keras_state.seed(11)
    assert _draws() == expected
    assert not keras_state.tensorflow_seed_is_set()  # nor was TF's kernel cache emptied by setting it


def test_clear_session_restarts_names_and_settings() -> None:
    keras.backend.clear_session()
    first = keras.layers.Dense(1).name
    keras.layers.Dense(1)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras_state.clear_session()
        assert keras.layers.Dense(1).name == first
        assert keras.config.dtype_policy().name == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.slow
def test_a_training_seeded_either_way_has_the_same_metrics(
    cifar_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_cifar10(cifar_folder)
    spec = TrainSpec(regime="scratch", seed=4, alpha=0.25, batch_size=32, lr=1e-3, epochs=1, augment=True)

    def metrics(folder: str) -> list[tuple[float, ...]]:
        keras.backend.clear_session()
        result = train(spec, data, tmp_path / folder, loop="fit", reuse_compiled=False)
        return [(r.loss, r.accuracy, r.val_loss or 0.0, r.val_accuracy or 0.0) for r in result.history]

    ours = metrics("ours")
    monkeypatch.setattr(keras_state, "seed", keras.utils.set_random_seed)
    assert metrics("keras") == ours
