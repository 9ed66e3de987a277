"""Plans: what `submit` turns into runs. Pure data, no I/O beyond checking an image is readable.

The ``all`` plan is the seed's whole lab report: three trainings (x seeds), three visualizations that use
the ``imagenet`` regime's trained model, and one report that waits for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from storage.models import RunKind
from worker.profiles import Profile
from worker.specs import REGIMES, ReportSpec, SpecError, TrainSpec, VisualizeSpec, spec_hash

# The training whose model the visualizations look at, as in the seed's Exercise 4.
VISUALIZED_REGIME = "imagenet"


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
        """Spec hash; a run that consumes another run's output includes that run's identity too."""
        spec = dict(self.spec, _inputs=list(dependency_hashes)) if dependency_hashes else self.spec
        return spec_hash(self.kind.value, spec, code_version)


@dataclass(frozen=True)
class Plan:
    name: str
    runs: tuple[PlannedRun, ...]
    report: bool = field(default=True)


def train_spec(profile: Profile, regime: str, seed: int) -> TrainSpec:
    keys = {k: v for k, v in profile.items() if not k.startswith("vis_")}
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


def _train_run(profile: Profile, regime: str, seed: int) -> PlannedRun:
    spec = train_spec(profile, regime, seed)
    return PlannedRun(
        key=f"train/{regime}/s{seed}",
        kind=RunKind.TRAIN,
        label=regime,
        spec=spec.to_dict(),
        seed=seed,
        total_epochs=spec.total_epochs,
    )


def image_label(image: str) -> str:
    return image if image in ("random", "sine") else "photo"


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
    if seeds < 1 or seeds > 100:
        raise SpecError("--seeds", f"must be between 1 and 100, got {seeds}")
    runs = [_train_run(profile, regime, base_seed + i) for regime in REGIMES for i in range(seeds)]
    model_key = f"train/{VISUALIZED_REGIME}/s{base_seed}"
    runs += [
        _visualize_run(profile, image, base_seed, model_key, "checkpoint")
        for image in ("random", "sine", photo)
    ]
    return Plan(name="all", runs=tuple(runs))


def plan_train(profile: Profile, *, regime: str, seeds: int, base_seed: int) -> Plan:
    if regime not in REGIMES:
        raise SpecError("--regime", f"must be one of {', '.join(REGIMES)}; got {regime!r}")
    if seeds < 1 or seeds > 100:
        raise SpecError("--seeds", f"must be between 1 and 100, got {seeds}")
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
