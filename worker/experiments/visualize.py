"""Exercise 4: gradient ascent on an input image to maximize a conv layer's mean activation.

Follows F. Chollet's "Visualizing what convnets learn" (keras.io), one small function per step:
``_feature_model`` (base input -> layer output), ``_ascent`` (the loop), ``deprocess_image``. Differences,
as the seed did them: the loss is the mean of the whole layer output (all filters, no border crop), not
one filter; and the deprocessed image is not center-cropped, so it keeps the input's size.

The ascent runs in MobileNet's preprocessed space (``x / 127.5 - 1``). Each step adds ``step_size`` times
the L2-normalized gradient (as Chollet does: the step length is then independent of the layer's scale);
the image is not clipped during the ascent. ``activation_before``/``after`` are the mean activations of the
starting and final images, so a working ascent has ``after > before``.

The steps run on the device in compiled chunks of up to ``ASCENT_CHUNK`` (50) steps, one call each
(:func:`worker.experiments.gradients.ascend`: a ``tf.while_loop`` or ``jax.lax.fori_loop``), instead of one
dispatch and one NumPy round trip per step. A cancel is checked between chunks, so it takes effect within
one chunk: at most 50 steps (measured on a shared 2-core CPU at 128x128, conv_pw_13: about 1 s on
TensorFlow, 2 s on JAX; expected to be a fraction of a second on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from contract.specs import VisualizeSpec
from worker.experiments import kept_models
from worker.experiments.errors import ExperimentError, LayerError, StopRequested
from worker.experiments.gradients import ascend
from worker.experiments.images import make_input_image
from worker.experiments.models import base_of, build_base

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)

ASCENT_CHUNK = 50
"""Ascent steps per compiled call; ``should_stop`` is asked before each call."""

_FEATURES_ATTRIBUTE = "_convlab_feature_models"


@dataclass(frozen=True)
class VisualizationResult:
    """The uint8 starting image, one uint8 HxWx3 image per layer, and mean activations before/after."""

    input_image: np.ndarray
    layers: dict[str, np.ndarray]
    activation_before: dict[str, float]
    activation_after: dict[str, float]


def visualize(
    spec: VisualizeSpec,
    *,
    checkpoint: Path | None = None,
    weights_dir: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    reuse_compiled: bool = True,
) -> VisualizationResult:
    """Run the ascent for each of ``spec.layers`` from the same starting image.

    ``should_stop`` is asked before every chunk of up to ``ASCENT_CHUNK`` steps; when it says so,
    :class:`StopRequested` is raised. ``reuse_compiled``: run on a kept base of the same graph
    (:mod:`~worker.experiments.kept_models`), whose ascent steps are traced already.
    """
    spec.validate()
    base = _network(spec, checkpoint, weights_dir)
    if reuse_compiled:
        base = kept_models.in_place_of(base)  # with its feature models and their traced ascents
    feature_models = {name: _feature_model(base, name) for name in spec.layers}
    start = make_input_image(spec.image, spec.input_size, spec.seed)
    images: dict[str, np.ndarray] = {}
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for name, feature_model in feature_models.items():
        final, before[name], after[name] = _ascent(
            feature_model, preprocess(start), spec.steps, spec.step_size, should_stop
        )
        images[name] = deprocess_image(final)
    return VisualizationResult(start, images, before, after)


def _network(spec: VisualizeSpec, checkpoint: Path | None, weights_dir: str | None) -> keras.Model:
    """A MobileNet base at ``spec.input_size`` with the weights ``spec.source`` asks for."""
    if spec.source != "checkpoint":
        return build_base(
            alpha=spec.alpha, input_size=spec.input_size, weights=spec.source, weights_dir=weights_dir
        )
    if checkpoint is None:
        raise ExperimentError("checkpoint: a model.keras path is required when source is 'checkpoint'")
    path = Path(checkpoint)
    if not path.is_file():
        raise ExperimentError(f"{path}: checkpoint file not found")
    try:
        trained = base_of(keras.models.load_model(path, compile=False))
    except Exception as exc:  # noqa: BLE001 - corrupt file or a model without our base: one clear message
        raise ExperimentError(
            f"{path}: cannot load a trained MobileNet base ({type(exc).__name__}: {exc})"
        ) from None
    base = build_base(alpha=spec.alpha, input_size=spec.input_size, weights="none")
    try:
        base.set_weights(trained.get_weights())  # conv and BatchNorm weights do not depend on input size
    except ValueError:
        raise ExperimentError(
            f"{path}: its MobileNet base does not match alpha={spec.alpha} (set alpha to the trained model's)"
        ) from None
    return base


def conv_layer_names(base: keras.Model) -> list[str]:
    """Names of the base's convolution layers, in order (what a visualization may target)."""
    return [layer.name for layer in base.layers if isinstance(layer, _CONV_TYPES)]


def _feature_model(base: keras.Model, layer_name: str) -> keras.Model:
    """Base input -> the layer's output; one per (base, layer), kept on the base, so that a kept base's
    feature models, and the ascent steps traced for them (``gradients``), serve its next visualization."""
    made: dict[str, keras.Model] = getattr(base, _FEATURES_ATTRIBUTE, None) or {}
    if layer_name not in made:
        made[layer_name] = _new_feature_model(base, layer_name)
        object.__setattr__(base, _FEATURES_ATTRIBUTE, made)  # past Keras's attribute tracking
    return made[layer_name]


def _new_feature_model(base: keras.Model, layer_name: str) -> keras.Model:
    try:
        layer = base.get_layer(layer_name)
    except ValueError:
        layer = None
    if layer is None or len(layer.output.shape) != 4:
        valid = conv_layer_names(base)
        raise LayerError(f"layers: no conv layer {layer_name!r}; valid: {', '.join(valid)}")
    return keras.Model(base.input, layer.output, name=f"features_{layer_name}")


def preprocess(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 (1, H, W, 3) in MobileNet's -1..1 range."""
    return (image.astype(np.float32) / 127.5 - 1.0)[None]


def _mean_activation(feature_model: keras.Model, x: np.ndarray) -> float:
    return float(keras.ops.convert_to_numpy(keras.ops.mean(feature_model(x, training=False))))


def _ascent(
    feature_model: keras.Model,
    x: np.ndarray,
    steps: int,
    step_size: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[np.ndarray, float, float]:
    """``steps`` steps of L2-normalized gradient ascent; returns (final image, mean before, mean after).

    The steps run in compiled chunks of ``min(steps, ASCENT_CHUNK)`` (the last one may be shorter: the step
    count is a tensor argument, so it does not recompile); ``should_stop`` is asked before each chunk.
    """
    before = None
    done = 0
    while done < steps:
        if should_stop():
            raise StopRequested("visualization stopped on request")
        chunk = min(steps - done, ASCENT_CHUNK)
        x, loss = ascend(feature_model, x, chunk, step_size)
        if before is None:
            before = loss
        done += chunk
    assert before is not None  # steps >= 1 (validated)
    return x[0], before, _mean_activation(feature_model, x)


def deprocess_image(image: np.ndarray) -> np.ndarray:
    """Chollet's ``deprocess_image`` without the crop: center, unit std, scale 0.15, shift 0.5, to uint8."""
    img = image.astype(np.float64)
    img -= img.mean()
    img /= img.std() + 1e-5
    img *= 0.15
    img += 0.5
    return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
