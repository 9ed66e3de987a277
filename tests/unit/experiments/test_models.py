from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from worker.experiments.errors import WeightsError
from worker.experiments.models import BASE_NAME, base_of, build_model, weights_file_name


def test_weights_file_names() -> None:
    assert weights_file_name(0.25) == "mobilenet_2_5_224_tf_no_top.h5"
    assert weights_file_name(1.0) == "mobilenet_1_0_224_tf_no_top.h5"


def test_output_shape_and_resizing() -> None:
    model = build_model(alpha=0.25, input_size=48, weights="none")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert base_of(model).name == BASE_NAME and base_of(model).input_shape == (None, 48, 48, 3)
    probs = keras.ops.convert_to_numpy(model(np.full((2, 32, 32, 3), 200.0, np.float32)))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_imagenet_weights_load_from_folder(weights_dir: Path) -> None:
    model = build_model(alpha=0.25, input_size=32, weights="imagenet", weights_dir=str(weights_dir))
    reference = keras.applications.MobileNet(
        input_shape=(224, 224, 3),
        alpha=0.25,
        include_top=False,
        weights=str(weights_dir / weights_file_name(0.25)),
    )
    for name in ("conv1", "conv_pw_13", "conv_pw_13_bn"):
        for got, want in zip(
            base_of(model).get_layer(name).get_weights(), reference.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, want)
    fresh = build_model(alpha=0.25, input_size=32, weights="none")
    assert not np.array_equal(
        base_of(fresh).get_layer("conv1").get_weights()[0], reference.get_layer("conv1").get_weights()[0]
    )


def test_missing_weights_file_names_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        build_model(alpha=0.25, input_size=32, weights="imagenet", weights_dir=str(tmp_path))
    message = str(caught.value)
    assert "mobilenet_2_5_224_tf_no_top.h5" in message and str(tmp_path) in message and "\n" not in message
