from __future__ import annotations

import pytest

from contract.profiles import PROFILES, parse_assignments, resolve_profile
from contract.specs import SpecError, TrainSpec, VisualizeSpec, spec_hash


def test_train_spec_round_trips_and_counts_epochs_across_phases() -> None:
    spec = TrainSpec(regime="finetune", seed=3, head_epochs=20, tune_epochs=40).validate()
    assert TrainSpec.from_dict(spec.to_dict()) == spec
    assert spec.total_epochs == 60
    assert TrainSpec(regime="scratch", seed=0, epochs=7).total_epochs == 7
    assert TrainSpec(regime="scratch", seed=0).weights == "none"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"regime": "random"}, "regime"),
        ({"alpha": 0.3}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"input_size": 16}, "input_size"),
        ({"train_limit": 5}, "train_limit"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_train_values_name_the_field(change: dict[str, object], field: str) -> None:
    values = {"regime": "scratch", "seed": 0, **change}
    with pytest.raises(SpecError) as info:
        TrainSpec(**values).validate()  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_visualize_spec_round_trips_layers_as_tuple() -> None:
    spec = VisualizeSpec(image="sine", seed=1, layers=("conv_pw_1", "conv_dw_2_relu")).validate()
    assert VisualizeSpec.from_dict(spec.to_dict()) == spec


def test_unknown_spec_field_is_rejected() -> None:
    with pytest.raises(SpecError, match="bogus"):
        TrainSpec.from_dict({"regime": "scratch", "seed": 0, "bogus": 1})


def test_spec_hash_is_normalized_and_sensitive() -> None:
    a = spec_hash("train", {"x": 1, "y": 2}, "v1")
    assert a == spec_hash("train", {"y": 2, "x": 1}, "v1")
    assert a != spec_hash("train", {"x": 1, "y": 3}, "v1")
    assert a != spec_hash("train", {"x": 1, "y": 2}, "v2")


def test_profiles_are_valid_specs() -> None:
    from orchestrator.plans import train_spec, visualize_spec

    for name in PROFILES:
        values = resolve_profile(name)
        for regime in ("scratch", "imagenet", "finetune"):
            train_spec(values, regime, 0)
        visualize_spec(values, "random", 0)


def test_paper_profile_is_the_seed() -> None:
    paper = resolve_profile("paper")
    assert (paper["alpha"], paper["input_size"], paper["epochs"], paper["lr"]) == (1.0, 32, 60, 1e-4)
    assert (paper["head_epochs"], paper["tune_epochs"], paper["tune_lr"]) == (20, 40, 1e-5)
    assert (paper["vis_steps"], paper["vis_step_size"]) == (50, 10.0)
    assert paper["train_limit"] is None and paper["val_limit"] is None


def test_overrides_are_typed() -> None:
    values = resolve_profile(
        "smoke", {"epochs": "4", "lr": "1e-3", "train_limit": "all", "vis_layers": "conv1, conv_pw_3"}
    )
    assert values["epochs"] == 4 and values["lr"] == 1e-3
    assert values["train_limit"] is None and values["vis_layers"] == ("conv1", "conv_pw_3")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"nope": "1"}, "unknown key 'nope'"), ({"epochs": "many"}, "epochs: expected an int")],
)
def test_bad_overrides(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resolve_profile("smoke", overrides)


def test_unknown_profile() -> None:
    with pytest.raises(SpecError, match="profile: must be one of paper, quick, smoke"):
        resolve_profile("fast")


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", " b = x "]) == {"a": "1", "b": "x"}
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_assignments(["oops"])
