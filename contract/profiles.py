"""Profiles: named sets of experiment parameters, defined here and nowhere else.

Every key can be overridden with ``--set key=value``. Keys without the ``vis_`` prefix are
:class:`~contract.specs.TrainSpec` fields; ``vis_*`` keys are :class:`~contract.specs.VisualizeSpec` fields
(``alpha`` serves both: a visualization looks at the network that was trained). ``explain_*`` keys are
read by the ``explain`` plan only (see ``orchestrator.plans.plan_explain``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.specs import DEFAULT_LAYERS, SpecError, VisualizeSpec

Profile = dict[str, Any]

# The seed's way for the two knobs that go beyond it: BatchNorm trains once the base is unfrozen, and no
# augmentation. ``explain_input_size``: the size the ``explain`` plan upscales CIFAR-10's 32x32 images to
# (the ImageNet weights were made at 128-224; at 32 the base's last feature map is 1x1).
_SEED_KNOBS: Profile = {"tune_bn": "batch", "augment": False}

PROFILES: dict[str, Profile] = {
    # The seed exactly. It gives no batch size: 32 is Keras's fit() default, which the seed most likely used.
    "paper": {
        "alpha": 1.0,
        "input_size": 32,
        "train_limit": None,
        "val_limit": None,
        "batch_size": 32,
        "epochs": 60,
        "lr": 1e-4,
        "head_epochs": 20,
        "tune_epochs": 40,
        "tune_lr": 1e-5,
        "vis_input_size": 128,
        "vis_steps": 50,
        "vis_step_size": 10.0,
        "vis_layers": DEFAULT_LAYERS,
        **_SEED_KNOBS,
        "explain_input_size": 128,
    },
    # Minutes on a 2-core CPU: alpha 0.25 and a class-balanced 10,000/2,000 subset.
    "quick": {
        "alpha": 0.25,
        "input_size": 32,
        "train_limit": 10_000,
        "val_limit": 2_000,
        "batch_size": 32,
        "epochs": 6,
        "lr": 1e-4,
        "head_epochs": 2,
        "tune_epochs": 4,
        "tune_lr": 1e-5,
        "vis_input_size": 128,
        "vis_steps": 50,
        "vis_step_size": 10.0,
        "vis_layers": DEFAULT_LAYERS,
        **_SEED_KNOBS,
        "explain_input_size": 128,
    },
    # Tests and CI: alpha 0.25 (whose ImageNet weights are available offline), a few hundred images.
    "smoke": {
        "alpha": 0.25,
        "input_size": 32,
        "train_limit": 300,
        "val_limit": 100,
        "batch_size": 32,
        "epochs": 1,
        "lr": 1e-4,
        "head_epochs": 1,
        "tune_epochs": 1,
        "tune_lr": 1e-5,
        "vis_input_size": 64,
        "vis_steps": 3,
        "vis_step_size": 10.0,
        "vis_layers": DEFAULT_LAYERS,
        **_SEED_KNOBS,
        "explain_input_size": 48,
    },
}

_OPTIONAL_INT = {"train_limit", "val_limit"}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(key: str, raw: str, current: Any) -> Any:
    """Turn the text of ``--set key=raw`` into the type the profile holds for ``key``."""
    if key in _OPTIONAL_INT:
        if raw.lower() in ("none", "all", ""):
            return None
        current = 0
    if isinstance(current, bool):  # before int: a bool is an int to isinstance
        if raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise SpecError(key, f"expected true or false, got {raw!r}")
    try:
        if isinstance(current, tuple):
            names = tuple(part.strip() for part in raw.split(",") if part.strip())
            if not names:
                raise ValueError
            return names
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, int):
            return int(raw)
    except ValueError:
        named = {tuple: "comma-separated names", int: "an int"}
        kind = named.get(type(current), f"a {type(current).__name__}")
        raise SpecError(key, f"expected {kind}, got {raw!r}") from None
    return raw


def resolve_profile(name: str, overrides: Mapping[str, str] | None = None) -> Profile:
    """The profile's values with ``overrides`` (raw text from ``--set``) applied and typed."""
    if name not in PROFILES:
        raise SpecError("profile", f"must be one of {', '.join(PROFILES)}; got {name!r}")
    values = dict(PROFILES[name])
    for key, raw in (overrides or {}).items():
        if key not in values:
            raise SpecError("--set", f"unknown key {key!r}; allowed: {', '.join(sorted(values))}")
        values[key] = _coerce(key, raw, values[key])
    _check_visualization(values)
    return values


# The profile keys of a visualization, by the VisualizeSpec field each becomes (``alpha`` is shared).
_VIS_KEYS = {
    "layers": "vis_layers",
    "input_size": "vis_input_size",
    "steps": "vis_steps",
    "step_size": "vis_step_size",
}


def _check_visualization(values: Profile) -> None:
    """Refuse ``vis_*`` values a visualization would refuse, naming the ``--set`` key (not the spec
    field: ``input_size`` there is ``vis_input_size`` here), also for plans that visualize nothing."""
    try:
        VisualizeSpec(
            image="random",
            seed=0,
            layers=tuple(values["vis_layers"]),
            alpha=values["alpha"],
            input_size=values["vis_input_size"],
            steps=values["vis_steps"],
            step_size=values["vis_step_size"],
        ).validate()
    except SpecError as exc:
        key = _VIS_KEYS.get(exc.field, exc.field)
        raise SpecError(key, str(exc).split(": ", 1)[1]) from None


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["epochs=3", "lr=1e-3"]`` -> ``{"epochs": "3", "lr": "1e-3"}``. A key given twice is refused:
    the last one winning in silence would run a sweep the user did not ask for (one value per key; a
    grid is several submits)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError("--set", f"expected KEY=VALUE, got {item!r}")
        if key in result:
            raise SpecError(
                "--set", f"{key} given twice ({key}={result[key]} and {key}={value.strip()}); give it once"
            )
        result[key] = value.strip()
    return result
