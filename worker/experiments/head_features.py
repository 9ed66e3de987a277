"""The ``finetune`` head phase trained on features computed once (issue 22: what a plan does twice, do once).

In the head phase the MobileNet base is frozen, and Keras 3 runs a non-trainable BatchNormalization in
inference mode (its moving statistics), so every layer before the ``classifier`` maps an image to the same
vector in every epoch, in training and in validation alike. The plain path recomputes that vector for every
image in every epoch; this path computes it once per attempt (one ``predict`` over the training and the
validation images) and trains a model made of the very same ``classifier`` layer on it.

Why the result is the same, step by step:

- the head model reuses the full model's ``classifier`` layer (the same variables) and is compiled with the
  full model's optimizer object, so every update lands in the full model and the optimizer's moments and
  step counter are those a checkpoint of the full model saves (``optimizer_steps`` stays what
  ``CheckpointState`` expects, and the ``tune`` phase and a resume load the checkpoint as before);
- the loss, the metric and the optimizer are compiled as the plain path's (``regimes`` passes its own
  compile function), and the batches are the same: both loops order each epoch's images by (seed, epoch)
  (``fit_loop``, ``device_loop``) for any model;
- what differs is float rounding: ``predict`` runs the base with another batch size and in another
  compiled function than the train step, so a feature can differ in its last bits.

:func:`decide` is the one place that says whether a phase may take this path, and why not when it may not;
anything it does not recognise as frozen and deterministic sends the phase down the plain path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from contract.specs import TrainSpec

CLASSIFIER = "classifier"
# The one-off feature pass: BatchNorm in inference mode is per image, so the batch size changes nothing but
# speed (and rounding); 256 keeps a CPU's or a GPU's convolutions busier than the training batch of 32.
FEATURE_BATCH = 256

# Layer types whose output in training mode equals their output in inference mode once they hold no
# trainable weights. BatchNormalization is checked separately (only frozen, it runs in inference mode).
# Random* augmentation, Dropout, GaussianNoise... are absent on purpose: they draw in training mode.
_DETERMINISTIC = (
    keras.layers.InputLayer,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.ZeroPadding2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.Resizing,
)
_REGULARIZERS = (
    "kernel_regularizer",
    "bias_regularizer",
    "depthwise_regularizer",
    "pointwise_regularizer",
    "beta_regularizer",
    "gamma_regularizer",
    "activity_regularizer",
)


@dataclass(frozen=True)
class Decision:
    """Whether a phase trains its head on precomputed features, and why (or why not), in words."""

    use: bool
    reason: str


def decide(model: keras.Model, spec: TrainSpec, *, base_trainable: bool, enabled: bool = True) -> Decision:
    """Whether this phase of ``model`` (trainable flags already set for it) may train on fixed features.

    Only when the result is provably that of the plain path: the caller allows it, the base is frozen, no
    augmentation, the ``classifier`` is the model's output and its only trainable part, and every layer
    before it is frozen, deterministic in training mode (BatchNorm frozen, so in inference mode; no
    dropout, no random layer) and adds no regularization loss.
    """
    if not enabled:
        return Decision(False, "plain path asked for")
    if base_trainable:
        return Decision(False, "the base trains in this phase")
    if spec.augment:
        return Decision(False, "augmentation changes the base's input every epoch")
    try:
        classifier = model.get_layer(CLASSIFIER)
    except ValueError:
        return Decision(False, f"the model has no {CLASSIFIER!r} layer")
    if model.layers[-1] is not classifier or len(model.outputs) != 1:
        return Decision(False, f"{CLASSIFIER!r} is not the model's only output layer")
    head_ids = {id(v) for v in classifier.trainable_weights}
    extra = [v.path for v in model.trainable_weights if id(v) not in head_ids]
    if extra:
        return Decision(False, f"trainable weights outside the head: {', '.join(extra[:3])}")
    for layer in _flat_layers(model):
        if layer is classifier:
            continue
        why = _why_not_fixed(layer)
        if why:
            return Decision(False, f"layer {layer.name!r}: {why}")
    return Decision(True, "base frozen, BatchNorm in inference mode, no augmentation or dropout")


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, nested models opened (a nested model is a container, its layers do the computing)."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def _why_not_fixed(layer: keras.layers.Layer) -> str | None:
    if layer.trainable_weights:
        return "has trainable weights"
    if any(getattr(layer, name, None) is not None for name in _REGULARIZERS):
        return "adds a regularization loss"
    if isinstance(layer, keras.layers.BatchNormalization):
        # Keras 3 uses the moving statistics whenever the layer is not trainable, whatever `training` says.
        return "BatchNorm would use batch statistics" if layer.trainable else None
    if not isinstance(layer, _DETERMINISTIC):
        return f"{type(layer).__name__} is not known to be deterministic in training"
    return None


@dataclass(frozen=True)
class HeadTraining:
    """What the phase's loop trains instead of the full model, and what computing the features cost."""

    model: keras.Model  # input: a feature vector; its only layer is the full model's classifier
    x_train: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    train_seconds: float  # the training images' feature pass
    seconds: float  # both passes (training and validation images)


def prepare(
    model: keras.Model,
    x_train: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    compile_head: Callable[[keras.Model], None],
) -> HeadTraining:
    """Compute the features once and build the head model; ``compile_head`` compiles it as the phase
    would compile the full model, but with the full model's optimizer object (see the module docstring)."""
    classifier = model.get_layer(CLASSIFIER)
    extractor = keras.Model(model.inputs, classifier.input, name="head_features")
    started = time.perf_counter()
    features = _predict(extractor, x_train)
    train_seconds = time.perf_counter() - started
    val = (_predict(extractor, validation[0]), validation[1]) if validation is not None else None
    seconds = time.perf_counter() - started
    inputs = keras.Input(shape=features.shape[1:], name="features")
    head = keras.Model(inputs, classifier(inputs), name="head")
    compile_head(head)
    return HeadTraining(head, features, val, train_seconds, seconds)


def _predict(extractor: keras.Model, x: np.ndarray) -> np.ndarray:
    """The features of ``x``, in batches of exactly ``FEATURE_BATCH``: zero images pad the last batch and
    are dropped after, so the training and the validation images share one compiled program (a partial
    batch would compile another, about a second on JAX's CPU backend). Each image's features depend on
    that image alone (BatchNorm in inference mode), so the padding changes nothing else. The bulk is a
    view of ``x``: only the last batch is copied."""
    full = len(x) - len(x) % FEATURE_BATCH
    parts = [extractor.predict(x[:full], batch_size=FEATURE_BATCH, verbose=0)] if full else []
    if full < len(x):
        rest = np.zeros((FEATURE_BATCH, *x.shape[1:]), x.dtype)
        rest[: len(x) - full] = x[full:]
        parts.append(extractor.predict(rest, batch_size=FEATURE_BATCH, verbose=0)[: len(x) - full])
    return np.concatenate(parts).astype(np.float32, copy=False)
