"""The contract between the orchestrator and the workers: task names and frozen spec types.

No TensorFlow, no Celery here: the orchestrator imports this module and must start fast.
A spec is plain data; ``stored``/``from_dict`` give the JSON stored in ``Run.spec``, and
:func:`run_identity` is what makes two runs one unit of work.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from contract.mobilenet import CONV_LAYERS_TEXT, LAYER_NAMES

TASK_TRAIN = "convlab.train"
TASK_VISUALIZE = "convlab.visualize"
TASK_REPORT = "convlab.report"


class Regime(enum.StrEnum):
    """The three trainings of the seed's Exercise 3 (members compare equal to their stored strings)."""

    SCRATCH = "scratch"
    IMAGENET = "imagenet"
    FINETUNE = "finetune"


REGIMES = tuple(r.value for r in Regime)


class ImageKind(enum.StrEnum):
    """What a visualization starts from: a built-in image, or a photo (any other ``image`` value)."""

    RANDOM = "random"
    SINE = "sine"
    PHOTO = "photo"


# Keras's MobileNet v1 ships ImageNet weights only for these widths.
ALPHAS = (0.25, 0.5, 0.75, 1.0)
WEIGHTS = ("none", "imagenet")
BUILTIN_IMAGES = (ImageKind.RANDOM.value, ImageKind.SINE.value)  # anything else is a path to a photo
# What the built-in starting images are, in the words of captions (made in worker.experiments.images).
BUILTIN_IMAGE_TEXT: dict[str, str] = {
    # The seed's Fig. 3: "random values in the three RGB channels".
    ImageKind.RANDOM: "uniform random values 0-255 in each RGB channel",
    ImageKind.SINE: "sinusoids in the RGB channels (red along x, green along y, blue along the diagonal)",
}
# The last conv layers of Keras's MobileNet v1 (antepenultimate and last conv layer of the base).
DEFAULT_LAYERS = ("conv_pw_12", "conv_pw_13")
# Where a visualization takes its network from.
VIS_SOURCES = ("checkpoint", "imagenet", "none")


def image_kind(image: str) -> ImageKind:
    """The kind of a visualization's ``image`` value: a built-in image's own, else a photo."""
    return ImageKind(image) if image in BUILTIN_IMAGES else ImageKind.PHOTO


# BatchNorm once fine-tuning unfreezes the base: ``batch`` trains it (batch statistics, moving averages
# updated: the seed's plain Keras code), ``frozen`` keeps it in inference mode with its ImageNet statistics,
# scale and offset (Keras's transfer-learning guides).
TUNE_BN = ("batch", "frozen")
# Spec fields that describe an input for people (a photo's original file name) but do not change what a
# run computes: left out of the run identity, so the same photo under two names is one run.
INFORMATIONAL_FIELDS = ("image_name",)
# The training fields each regime does not read (``TrainSpec`` holds every key so that one profile fills
# all three regimes): left out of the stored spec and of the identity, so ``--set epochs=8`` leaves
# ``finetune``'s identity (and its cached result) alone, and ``--set tune_lr=...`` those of the others.
UNUSED_BY_REGIME: dict[str, tuple[str, ...]] = {
    "scratch": ("head_epochs", "tune_epochs", "tune_lr", "tune_bn"),
    "imagenet": ("head_epochs", "tune_epochs", "tune_lr", "tune_bn"),
    "finetune": ("epochs",),
}


class SpecError(ValueError):
    """A spec field holds a value that is not allowed. ``field`` names it for one-line CLI errors."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"expected a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"between {low} and {high}"
        raise SpecError(name, f"must be {allowed}, got {value}")


def _check_float(name: str, value: Any, low_exclusive: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(name, f"expected a number, got {value!r}")
    if not (low_exclusive < value <= high):
        raise SpecError(name, f"must be > {low_exclusive} and <= {high}, got {value}")


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise SpecError(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True)
class TrainSpec:
    """One training of MobileNet + Dense(10) on CIFAR-10 (Exercise 3 of the seed).

    ``scratch`` and ``imagenet`` train ``epochs`` epochs at ``lr``; ``finetune`` trains the head alone for
    ``head_epochs`` at ``lr``, then the whole network for ``tune_epochs`` at ``tune_lr``.

    ``tune_bn`` and ``augment`` go beyond the seed (the ``explain`` plan): BatchNorm after unfreezing (see
    ``TUNE_BN``) and pad-crop + horizontal-flip augmentation. At their defaults (the seed's way) they are
    left out of ``to_dict``, so the stored spec, its identity and checkpoints of the seed's runs are the
    same as before these fields existed.
    """

    regime: str
    seed: int
    alpha: float = 1.0
    input_size: int = 32
    train_limit: int | None = None  # None: all 50,000 training images
    val_limit: int | None = None  # None: all 10,000 test images
    batch_size: int = 32
    epochs: int = 60
    lr: float = 1e-4
    head_epochs: int = 20
    tune_epochs: int = 40
    tune_lr: float = 1e-5
    tune_bn: str = "batch"
    augment: bool = False

    @property
    def weights(self) -> str:
        return "none" if self.regime == Regime.SCRATCH else "imagenet"

    @property
    def total_epochs(self) -> int:
        return self.head_epochs + self.tune_epochs if self.regime == Regime.FINETUNE else self.epochs

    def validate(self) -> TrainSpec:
        _check_choice("regime", self.regime, REGIMES)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_choice("alpha", self.alpha, ALPHAS)
        _check_int("input_size", self.input_size, 32, 512)
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 10, 50_000 if name == "train_limit" else 10_000)
        _check_int("batch_size", self.batch_size, 1, 4096)
        _check_int("epochs", self.epochs, 1, 10_000)
        _check_int("head_epochs", self.head_epochs, 1, 10_000)
        _check_int("tune_epochs", self.tune_epochs, 1, 10_000)
        _check_float("lr", self.lr, 0.0, 10.0)
        _check_float("tune_lr", self.tune_lr, 0.0, 10.0)
        _check_choice("tune_bn", self.tune_bn, TUNE_BN)
        if not isinstance(self.augment, bool):
            raise SpecError("augment", f"expected true or false, got {self.augment!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every field (``tune_bn``/``augment`` only off their defaults): the checkpoint's key is made
        from it, unchanged, so that a training started by earlier code still resumes."""
        data = asdict(self)
        for name, default in (("tune_bn", "batch"), ("augment", False)):
            if data[name] == default:
                del data[name]
        return data

    def stored(self) -> dict[str, Any]:
        """What the run is: :meth:`to_dict` without the fields its regime does not read
        (:data:`UNUSED_BY_REGIME`). Stored in ``Run.spec``; ``from_dict`` gives them their defaults."""
        unused = UNUSED_BY_REGIME.get(self.regime, ())
        return {k: v for k, v in self.to_dict().items() if k not in unused}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class VisualizeSpec:
    """Gradient ascent on an input image to maximize a layer's mean activation (Exercise 4 of the seed).

    ``image`` is ``random``, ``sine`` or a path to a photo. ``source`` says where the network's weights
    come from: ``checkpoint`` (a finished training run's model, given to the task at run time),
    ``imagenet`` or ``none``.
    """

    image: str
    seed: int
    layers: tuple[str, ...] = DEFAULT_LAYERS
    source: str = "checkpoint"
    alpha: float = 1.0
    input_size: int = 128
    steps: int = 50
    step_size: float = 10.0
    # sha256 of a photo staged into the artifact store at submit time (``image`` = ``artifact:...``), so
    # that the copy a worker reads can be checked against what was submitted.
    image_sha256: str | None = None
    # The photo's file name as the user gave it (the staged copy is named by its checksum), for captions.
    image_name: str | None = None

    def validate(self) -> VisualizeSpec:
        if not isinstance(self.image, str) or not self.image:
            raise SpecError("image", "expected 'random', 'sine' or a path to an image file")
        if self.image_sha256 is not None and (
            len(self.image_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.image_sha256)
        ):
            raise SpecError("image_sha256", f"expected 64 lowercase hex digits, got {self.image_sha256!r}")
        _check_int("seed", self.seed, 0, 2**31 - 1)
        if not self.layers or not all(isinstance(x, str) and x for x in self.layers):
            raise SpecError("layers", "expected one or more layer names")
        unknown = [x for x in self.layers if x not in LAYER_NAMES]
        if unknown:
            raise SpecError("layers", f"MobileNet has no layer {unknown[0]!r}; allowed: {CONV_LAYERS_TEXT}")
        _check_choice("source", self.source, VIS_SOURCES)
        _check_choice("alpha", self.alpha, ALPHAS)
        _check_int("input_size", self.input_size, 32, 512)
        _check_int("steps", self.steps, 1, 10_000)
        _check_float("step_size", self.step_size, 0.0, 1000.0)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        for name in ("image_sha256", "image_name"):
            if data[name] is None:  # built-in images: the stored spec (and its identity) is unchanged
                del data[name]
        return data

    def stored(self) -> dict[str, Any]:
        return self.to_dict()

    def identity(self) -> dict[str, Any]:
        """The fields that change the result. The seed draws the ``random`` image and an untrained
        network's weights (``source=none``) and nothing else; a staged photo is its content (its sha256),
        not the name it was staged or submitted under; the network's own identity is that of the
        training it comes from (``source=checkpoint``: the run's inputs, see :func:`run_identity`)."""
        data = self.to_dict()
        if self.image != ImageKind.RANDOM and self.source != "none":
            del data["seed"]
        if self.image_sha256 is not None:
            del data["image"]
        data.pop("image_name", None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisualizeSpec:
        values = _known_fields(cls, data)
        if "layers" in values:
            values["layers"] = tuple(values["layers"])
        return cls(**values)


@dataclass(frozen=True)
class ReportSpec:
    """Build the sweep's figures, tables and HTML report."""

    sweep_id: str
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportSpec:
        return cls(**_known_fields(cls, data))


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(sorted(unknown)[0], f"unknown field for {cls.__name__}")
    return dict(data)


def identity_fields(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored spec that changes a run's result, per kind (one home for this rule)."""
    if kind == "train":
        return TrainSpec.from_dict(spec).stored()
    if kind == "visualize":
        return VisualizeSpec.from_dict(spec).identity()
    return {k: v for k, v in spec.items() if k not in INFORMATIONAL_FIELDS}


def run_identity(kind: str, spec: dict[str, Any], code_version: str, inputs: tuple[str, ...] = ()) -> str:
    """A run's identity: what changes its result (:func:`identity_fields`), the code that computes it
    (``contract.version.code_identity``, so a code change never reuses old results) and the identities
    of the runs whose output it consumes (``inputs``: a visualization's training)."""
    payload: dict[str, Any] = {"kind": kind, "spec": identity_fields(kind, spec), "code": code_version}
    if inputs:
        payload["inputs"] = list(inputs)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_hash(kind: str, spec: dict[str, Any], code_version: str) -> str:
    """A hash of ``spec`` as given (informational fields left out): the checkpoint's key
    (``worker.experiments.regimes.train_spec_hash``). A run's identity is :func:`run_identity`."""
    spec = {k: v for k, v in spec.items() if k not in INFORMATIONAL_FIELDS}
    payload = json.dumps({"kind": kind, "spec": spec, "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
