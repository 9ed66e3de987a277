"""The static layer list ``submit`` checks ``vis_layers`` against is Keras's own, for every width and size."""

from __future__ import annotations

import pytest

from contract.mobilenet import CONV_LAYER_NAMES, LAYER_NAMES
from contract.specs import ALPHAS, DEFAULT_LAYERS


@pytest.mark.parametrize("alpha", ALPHAS)
def test_the_list_is_the_layers_keras_builds_at_every_alpha_and_input_size(alpha: float) -> None:
    import keras

    for size in (32, 224):
        base = keras.applications.MobileNet(
            input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
        )
        # The input layer and the pooling get auto-numbered names and are no targets (no feature map).
        built = [
            layer.name
            for layer in base.layers
            if len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer)
        ]
        assert built == list(LAYER_NAMES), (alpha, size)


def test_the_defaults_and_every_convolution_are_listed() -> None:
    assert set(DEFAULT_LAYERS) <= set(CONV_LAYER_NAMES)
    assert len(CONV_LAYER_NAMES) == 1 + 2 * 13  # conv1, then a depthwise and a pointwise per block
