"""Plans: what `submit` turns into runs. Pure data, no I/O beyond checking an image is readable.

The ``all`` plan is the seed's whole lab report: three trainings (x seeds), three visualizations that use
the ``imagenet`` regime's trained model, and one report that waits for everything else.

The ``explain`` plan answers the seed's two open questions with controlled runs beside its three regimes,
on the same data, seeds and epochs (see :data:`EXPLAIN_VARIANTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from contract.profiles import Profile
from contract.specs import (
    BUILTIN_IMAGES,
    REGIMES,
    Regime,
    ReportSpec,
    SpecError,
    TrainSpec,
    VisualizeSpec,
    image_kind,
    run_identity,
)
from storage.models import RunKind

# The training whose model the visualizations look at, as in the seed's Exercise 4.
VISUALIZED_REGIME = Regime.IMAGENET
MAX_INPUT_SIZE = 512  # TrainSpec's limit
_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainSpec))


@dataclass(frozen=True)
class Variant:
    """One controlled change (or combination) beside the seed's regimes, named by its run label."""

    label: str
    regime: str
    tune_bn: str = "batch"
    upscale: bool = False  # inputs resized to the profile's explain_input_size
    augment: bool = False


# Each changes one thing against the seed's run of the same regime, except the two combinations.
EXPLAIN_VARIANTS = (
    # Why does fine-tuning not beat ImageNet init? BatchNorm kept frozen once the base is unfrozen.
    Variant("finetune+bn-frozen", Regime.FINETUNE, tune_bn="frozen"),
    # Why is ImageNet init only ~78 %? Inputs at a size the weights were made for; augmentation.
    Variant("imagenet+upscaled", Regime.IMAGENET, upscale=True),
    Variant("imagenet+augment", Regime.IMAGENET, augment=True),
    # The combinations: the report names the best run of the sweep.
    Variant("imagenet+upscaled+augment", Regime.IMAGENET, upscale=True, augment=True),
    Variant(
        "finetune+bn-frozen+upscaled+augment", Regime.FINETUNE, tune_bn="frozen", upscale=True, augment=True
    ),
)


@dataclass(frozen=True)
class PlannedRun:
    key: str  # unique within the plan, e.g. "train/imagenet/s0"
    kind: RunKind
    label: str
    spec: dict[str, Any]
    seed: int
    total_epochs: int = 0
    depends_on: tuple[str, ...] = ()  # keys of other planned runs
    cacheable: bool = True

    def identity(self, code_version: str, dependency_hashes: tuple[str, ...] = ()) -> str:
        """The run's identity (:func:`contract.specs.run_identity`); a run that consumes another run's
        output includes that run's identity too."""
        return run_identity(self.kind.value, self.spec, code_version, dependency_hashes)


@dataclass(frozen=True)
class Plan:
    name: str
    runs: tuple[PlannedRun, ...]
    report: bool = field(default=True)


def train_spec(profile: Profile, regime: str, seed: int) -> TrainSpec:
    keys = {k: v for k, v in profile.items() if k in _TRAIN_FIELDS}
    return TrainSpec(regime=regime, seed=seed, **keys).validate()


def visualize_spec(profile: Profile, image: str, seed: int, source: str = "checkpoint") -> VisualizeSpec:
    return VisualizeSpec(
        image=image,
        seed=seed,
        layers=tuple(profile["vis_layers"]),
        source=source,
        alpha=profile["alpha"],
        input_size=profile["vis_input_size"],
        steps=profile["vis_steps"],
        step_size=profile["vis_step_size"],
    ).validate()


def _train_run(profile: Profile, regime: str, seed: int, label: str | None = None) -> PlannedRun:
    spec = train_spec(profile, regime, seed)
    label = label or regime
    return PlannedRun(
        key=f"train/{label}/s{seed}",
        kind=RunKind.TRAIN,
        label=label,
        spec=spec.stored(),  # only what the regime reads: its identity ignores the other keys
        seed=seed,
        total_epochs=spec.total_epochs,
    )


def image_label(image: str) -> str:
    return image_kind(image)


def _visualize_run(
    profile: Profile, image: str, seed: int, depends_on: str | None, source: str
) -> PlannedRun:
    spec = visualize_spec(profile, image, seed, source)
    label = image_label(image)
    return PlannedRun(
        key=f"visualize/{label}",
        kind=RunKind.VISUALIZE,
        label=label,
        spec=spec.to_dict(),
        seed=seed,
        depends_on=(depends_on,) if depends_on else (),
    )


def plan_all(profile: Profile, *, seeds: int, base_seed: int, photo: str) -> Plan:
    _check_seeds(seeds)
    runs = [_train_run(profile, regime, base_seed + i) for regime in REGIMES for i in range(seeds)]
    model_key = f"train/{VISUALIZED_REGIME}/s{base_seed}"
    runs += [
        _visualize_run(profile, image, base_seed, model_key, "checkpoint")
        for image in (*BUILTIN_IMAGES, photo)
    ]
    return Plan(name="all", runs=tuple(runs))


def _check_seeds(seeds: int) -> None:
    if seeds < 1 or seeds > 100:
        raise SpecError("--seeds", f"must be between 1 and 100, got {seeds}")


def plan_explain(profile: Profile, *, seeds: int, base_seed: int) -> Plan:
    """The seed's three regimes and :data:`EXPLAIN_VARIANTS`, each x seeds, and a report.

    Every variant takes all other values from the profile (data, seeds, epochs, learning rates), so a
    difference in accuracy is the change's alone. The seed's three runs have the same specs as in ``all``:
    an ``all`` sweep of the same profile and code already ran them, and they are reused.
    """
    _check_seeds(seeds)
    size = profile["explain_input_size"]
    if not profile["input_size"] < size <= MAX_INPUT_SIZE:
        raise SpecError(
            "explain_input_size",
            f"must be larger than input_size ({profile['input_size']}) and at most {MAX_INPUT_SIZE}, "
            f"got {size}",
        )
    runs = [_train_run(profile, regime, base_seed + i) for regime in REGIMES for i in range(seeds)]
    for variant in EXPLAIN_VARIANTS:
        values = dict(profile)  # a variant only adds its changes to what the profile (and --set) says
        if variant.tune_bn != "batch":
            values["tune_bn"] = variant.tune_bn
        if variant.augment:
            values["augment"] = True
        if variant.upscale:
            values["input_size"] = profile["explain_input_size"]
        runs += [_train_run(values, variant.regime, base_seed + i, variant.label) for i in range(seeds)]
    return Plan(name="explain", runs=tuple(runs))


def plan_train(profile: Profile, *, regime: str, seeds: int, base_seed: int) -> Plan:
    if regime not in REGIMES:
        raise SpecError("--regime", f"must be one of {', '.join(REGIMES)}; got {regime!r}")
    _check_seeds(seeds)
    return Plan(
        name="train",
        runs=tuple(_train_run(profile, regime, base_seed + i) for i in range(seeds)),
        report=False,
    )


def plan_visualize(profile: Profile, *, images: list[str], seed: int, source: str) -> Plan:
    if source == "checkpoint":
        raise SpecError("--source", "use 'imagenet' or 'none' here; `submit all` visualizes a trained model")
    runs = [_visualize_run(profile, image, seed, None, source) for image in images]
    # Several photos share the label "photo": number the plan keys so each run is its own.
    runs = [replace(run, key=f"{run.key}/{i}") for i, run in enumerate(runs)]
    return Plan(name="visualize", runs=tuple(runs), report=False)


def report_run(sweep_id: str, depends_on: tuple[str, ...]) -> PlannedRun:
    spec = ReportSpec(sweep_id=sweep_id)
    return PlannedRun(
        key="report",
        kind=RunKind.REPORT,
        label="report",
        spec=spec.to_dict(),
        seed=0,
        depends_on=depends_on,
        cacheable=False,
    )
