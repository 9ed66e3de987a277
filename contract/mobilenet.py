"""The layer names of Keras's MobileNet v1 base, known without importing TensorFlow.

A visualization targets a layer of the base by name (``vis_layers``); ``submit`` checks the names against
this list so that a typo is refused at once instead of failing the task hours later. The names are Keras's
own (``keras.applications.MobileNet``, ``include_top=False``): the same for every width (alpha) and input
size, which ``tests/unit/contract/test_mobilenet_layers.py`` checks by building the model and comparing.
Only layers with a feature map (4-D output) are listed: the input layer and the pooling are not targets.
"""

from __future__ import annotations

# The 13 depthwise-separable blocks; the strided ones (2, 4, 6, 12) start with an explicit zero padding.
_BLOCKS = 13
_PADDED_BLOCKS = (2, 4, 6, 12)


def _layer_names() -> tuple[str, ...]:
    names = ["conv1", "conv1_bn", "conv1_relu"]
    for block in range(1, _BLOCKS + 1):
        if block in _PADDED_BLOCKS:
            names.append(f"conv_pad_{block}")
        for part in ("dw", "pw"):
            names += [f"conv_{part}_{block}", f"conv_{part}_{block}_bn", f"conv_{part}_{block}_relu"]
    return tuple(names)


# Every layer of the base a visualization may target, in the network's order.
LAYER_NAMES: tuple[str, ...] = _layer_names()
# The convolutions themselves: what an error message suggests (the _bn/_relu outputs are allowed too).
CONV_LAYER_NAMES: tuple[str, ...] = tuple(
    n for n in LAYER_NAMES if not n.startswith("conv_pad") and n.split("_")[-1] not in ("bn", "relu")
)
CONV_LAYERS_TEXT = (
    f"conv1, conv_dw_1..{_BLOCKS}, conv_pw_1..{_BLOCKS} (or their _bn, _relu outputs; conv_pad_2/4/6/12)"
)
