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


def _identity(kind: str, spec: dict[str, object]) -> str:
    from contract.specs import run_identity

    return run_identity(kind, spec, "code")


def test_a_training_identity_holds_only_what_its_regime_reads() -> None:
    def identity(regime: str, **values: object) -> str:
        return _identity("train", TrainSpec(regime=regime, seed=0, **values).validate().stored())  # type: ignore[arg-type]

    for regime in ("scratch", "imagenet"):
        for unused in ({"head_epochs": 3}, {"tune_epochs": 3}, {"tune_lr": 1e-3}, {"tune_bn": "frozen"}):
            assert identity(regime, **unused) == identity(regime), (regime, unused)
        assert identity(regime, epochs=8) != identity(regime)
    assert identity("finetune", epochs=8) == identity("finetune")
    for used in (
        {"head_epochs": 3},
        {"tune_epochs": 3},
        {"tune_lr": 1e-3},
        {"tune_bn": "frozen"},
        {"lr": 1e-3},
    ):
        assert identity("finetune", **used) != identity("finetune"), used
    stored = TrainSpec(regime="scratch", seed=0, tune_lr=1e-3).stored()
    assert not {"head_epochs", "tune_epochs", "tune_lr", "tune_bn"} & set(stored)
    assert "epochs" not in TrainSpec(regime="finetune", seed=0).stored()
    # The same identity from a full spec (an older row, every key) as from the stored one.
    full = TrainSpec(regime="scratch", seed=0, tune_lr=1e-3).to_dict()
    assert _identity("train", full) == identity("scratch")


def test_the_checkpoint_key_of_a_training_is_unchanged() -> None:
    """A training started by earlier code resumes: its checkpoint key is the full spec's, as before."""
    spec = TrainSpec(regime="scratch", seed=0, head_epochs=2)
    assert set(spec.to_dict()) >= {"head_epochs", "tune_epochs", "tune_lr", "epochs"}


def test_a_visualization_identity_holds_only_what_changes_its_images() -> None:
    def identity(**values: object) -> str:
        base: dict[str, object] = {"image": "sine", "seed": 0, "source": "imagenet"}
        return _identity("visualize", VisualizeSpec(**{**base, **values}).validate().to_dict())  # type: ignore[arg-type]

    assert identity(seed=1) == identity()  # the sine pattern draws nothing
    assert identity(image="random", seed=1) != identity(image="random")  # the noise is seeded
    assert identity(source="none", seed=1) != identity(source="none")  # so are untrained weights
    assert identity(source="checkpoint", seed=1) == identity(source="checkpoint")
    photo = {"image_sha256": "a" * 64}
    assert identity(image="artifact:inputs/a.jpg", image_name="dog.jpg", **photo) == identity(
        image="artifact:inputs/a.jpeg", image_name="cat.jpg", **photo
    )  # a photo is its content
    assert identity(image="artifact:inputs/a.jpg", **photo) != identity(
        image="artifact:inputs/b.jpg", image_sha256="b" * 64
    )
    for used in ({"steps": 2}, {"step_size": 1.0}, {"input_size": 64}, {"layers": ("conv_pw_1",)}):
        assert identity(**used) != identity(), used
