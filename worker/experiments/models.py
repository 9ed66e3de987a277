"""MobileNet v1 + Dense(10) for CIFAR-10, as in Exercise 3 of the seed.

The model takes raw pixels (0..255, float) at 32x32: resizing (when ``input_size != 32``) and MobileNet's
own preprocessing (``x / 127.5 - 1``) are layers inside the model, so a saved ``model.keras`` is
self-contained and callers never preprocess. The MobileNet base is a nested sub-model named
``mobilenet_base`` so that it can be frozen and unfrozen as a unit (fine-tuning) and copied into a base of
another input size (visualization).

BatchNorm: the base is called in the default mode, so its BatchNorm layers use batch statistics whenever
the base is trainable and their moving statistics when it is frozen (Keras 3 runs a non-trainable
BatchNormalization in inference mode). This is what the seed's Keras code most likely did and it is needed
for training from scratch; see ``regimes`` for what it means for fine-tuning, and :func:`freeze_batchnorm`
for the alternative (``TrainSpec.tune_bn = "frozen"``).

Augmentation (``augment``): random shifts of up to 4 pixels with black fill (the classic CIFAR pad-4 +
random crop, drawn per image) and horizontal flips, on the 32x32 pixels before any resizing. They are
layers too, active only in training, so validation and saved models see the images unchanged.
"""

from __future__ import annotations

from pathlib import Path

import keras

from contract.inputs import WEIGHTS_ALPHA_TEXT
from contract.inputs import weights_file_name as contract_weights_file_name
from worker.experiments.errors import WeightsError

BASE_NAME = "mobilenet_base"
NUM_CLASSES = 10
CIFAR_SIZE = 32
# Where keras.applications.MobileNet downloads its weights from (same as Keras's BASE_WEIGHT_PATH).
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
# Pad-and-crop by 4 pixels on 32: a shift of up to 4/32 of the image each way (the usual CIFAR setting).
_SHIFT = 4 / CIFAR_SIZE


def weights_file_name(alpha: float) -> str:
    """Keras's own file name for the no-top ImageNet weights at 224 (conv weights fit any input size)."""
    if alpha not in WEIGHTS_ALPHA_TEXT:
        raise WeightsError(
            f"alpha: ImageNet weights exist for {', '.join(map(str, WEIGHTS_ALPHA_TEXT))}; got {alpha}"
        )
    return contract_weights_file_name(alpha)


def imagenet_weights_path(alpha: float, weights_dir: str | None) -> str:
    """Path of the ImageNet weights file: from ``weights_dir`` if given, else Keras's cache (downloading)."""
    name = weights_file_name(alpha)
    if weights_dir is not None:
        path = Path(weights_dir) / name
        if not path.is_file():
            raise WeightsError(f"{path}: ImageNet weights file {name} not found in folder {weights_dir}")
        return str(path)
    try:
        return keras.utils.get_file(name, WEIGHTS_URL + name, cache_subdir="models")
    except Exception as exc:  # noqa: BLE001 - offline, proxy, HTTP errors all mean "not available"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"{name}: ImageNet weights not in the Keras cache folder ($KERAS_HOME or ~/.keras)/models "
            f"and the download failed ({reason}); pass a weights folder holding {name}"
        ) from None


def build_base(*, alpha: float, input_size: int, weights: str, weights_dir: str | None = None) -> keras.Model:
    """MobileNet v1 without top, global average pooled, taking preprocessed input (-1..1).

    ImageNet weights are passed as a file path, so Keras skips its 224-only input-size check and loads the
    (size-agnostic) conv and BatchNorm weights at any input size.
    """
    if weights not in ("none", "imagenet"):
        raise WeightsError(f"weights: must be 'none' or 'imagenet', got {weights!r}")
    path = imagenet_weights_path(alpha, weights_dir) if weights == "imagenet" else None
    try:
        return keras.applications.MobileNet(
            input_shape=(input_size, input_size, 3),
            alpha=alpha,
            include_top=False,
            weights=path,
            pooling="avg",
            name=BASE_NAME,
        )
    except (ValueError, OSError) as exc:
        if path is None:
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: cannot load as MobileNet alpha={alpha} weights ({reason})") from None


def build_model(
    *, alpha: float, input_size: int, weights: str, weights_dir: str | None = None, augment: bool = False
) -> keras.Model:
    """Raw 32x32x3 pixels -> [shift + flip] -> [Resizing] -> x/127.5-1 -> MobileNet base -> Dense(10)."""
    inputs = keras.Input(shape=(CIFAR_SIZE, CIFAR_SIZE, 3), name="pixels")
    x = inputs
    if augment:
        # RandomTranslation rather than ZeroPadding2D + RandomCrop: Keras's RandomCrop draws one offset per
        # batch, this draws one per image; "nearest" keeps whole-pixel shifts, as a pad-crop does.
        x = keras.layers.RandomTranslation(
            _SHIFT, _SHIFT, fill_mode="constant", interpolation="nearest", fill_value=0.0, name="shift"
        )(x)
        x = keras.layers.RandomFlip("horizontal", name="flip")(x)
    if input_size != CIFAR_SIZE:
        x = keras.layers.Resizing(input_size, input_size, name="resize")(x)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
    base = build_base(alpha=alpha, input_size=input_size, weights=weights, weights_dir=weights_dir)
    x = base(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_{alpha:g}_cifar10")


def freeze_batchnorm(base: keras.Model) -> int:
    """Keep every BatchNormalization layer of ``base`` in inference mode, with its moving statistics,
    scale and offset fixed, while the other layers train; returns how many layers it froze.

    Keras 3 runs a non-trainable BatchNormalization in inference mode, and ``trainable`` is saved with the
    model, so a resumed checkpoint keeps it. This is the practice of Keras's transfer-learning guides (they
    call the base with ``training=False``; freezing the layers gives the same statistics and survives
    save/load without a custom call signature).
    """
    frozen = 0
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def base_of(model: keras.Model) -> keras.Model:
    """The nested MobileNet base of a model made by :func:`build_model` (also after ``load_model``)."""
    return model.get_layer(BASE_NAME)
