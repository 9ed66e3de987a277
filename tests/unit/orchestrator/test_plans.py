from __future__ import annotations

import pytest

from contract.profiles import resolve_profile
from contract.specs import SpecError
from orchestrator.plans import plan_all, plan_train, plan_visualize
from storage.models import RunKind


def test_all_plan_is_the_seed_with_dependencies() -> None:
    plan = plan_all(resolve_profile("smoke"), seeds=2, base_seed=5, photo="/p/dog.jpg")
    trains = [r for r in plan.runs if r.kind == RunKind.TRAIN]
    visuals = [r for r in plan.runs if r.kind == RunKind.VISUALIZE]
    assert sorted(r.label for r in trains) == sorted(["scratch", "imagenet", "finetune"] * 2)
    assert {r.seed for r in trains} == {5, 6}
    assert [r.label for r in visuals] == ["random", "sine", "photo"]
    assert all(v.depends_on == ("train/imagenet/s5",) for v in visuals)
    assert plan.report is True
    keys = [r.key for r in plan.runs]
    assert len(keys) == len(set(keys))


def test_identity_depends_on_inputs() -> None:
    plan = plan_all(resolve_profile("smoke"), seeds=1, base_seed=0, photo="/p/dog.jpg")
    visual = next(r for r in plan.runs if r.kind == RunKind.VISUALIZE)
    assert visual.identity("v1", ("a",)) != visual.identity("v1", ("b",))


def test_bad_plan_arguments() -> None:
    with pytest.raises(SpecError, match="--seeds"):
        plan_all(resolve_profile("smoke"), seeds=0, base_seed=0, photo="x")
    with pytest.raises(SpecError, match="--regime"):
        plan_train(resolve_profile("smoke"), regime="random", seeds=1, base_seed=0)
    with pytest.raises(SpecError, match="--source"):
        plan_visualize(resolve_profile("smoke"), images=["random"], seed=0, source="checkpoint")


def test_explain_plan_changes_one_thing_per_question_on_the_seeds_data_seeds_and_epochs() -> None:
    from dataclasses import asdict

    from contract.specs import TrainSpec
    from orchestrator.plans import EXPLAIN_VARIANTS, plan_explain

    profile = resolve_profile("quick")
    plan = plan_explain(profile, seeds=2, base_seed=3)
    assert plan.name == "explain" and plan.report
    by_label: dict[str, list[TrainSpec]] = {}
    for run in plan.runs:
        assert run.kind == RunKind.TRAIN and run.depends_on == ()
        by_label.setdefault(run.label, []).append(TrainSpec.from_dict(run.spec))
    assert list(by_label) == ["scratch", "imagenet", "finetune", *(v.label for v in EXPLAIN_VARIANTS)]
    assert all(sorted(s.seed for s in specs) == [3, 4] for specs in by_label.values())

    def changed(label: str) -> dict[str, object]:
        spec = asdict(by_label[label][0])
        seed_way = asdict(by_label[spec["regime"]][0])
        return {k: v for k, v in spec.items() if seed_way[k] != v}

    assert changed("finetune+bn-frozen") == {"tune_bn": "frozen"}
    assert changed("imagenet+upscaled") == {"input_size": 128}
    assert changed("imagenet+augment") == {"augment": True}
    assert changed("imagenet+upscaled+augment") == {"input_size": 128, "augment": True}
    assert changed("finetune+bn-frozen+upscaled+augment") == {
        "tune_bn": "frozen",
        "input_size": 128,
        "augment": True,
    }
    # The seed's three runs are the `all` plan's, so an earlier `all` sweep's results are reused.
    seed_runs = {r.key: r.spec for r in plan_all(profile, seeds=2, base_seed=3, photo="/p.jpg").runs}
    assert all(
        seed_runs[r.key] == r.spec for r in plan.runs if r.label in ("scratch", "imagenet", "finetune")
    )


def test_explain_plan_follows_overrides_and_refuses_a_size_that_upscales_nothing() -> None:
    from orchestrator.plans import plan_explain

    plan = plan_explain(
        resolve_profile("smoke", {"epochs": "3", "explain_input_size": "64"}), seeds=1, base_seed=0
    )
    upscaled = next(r for r in plan.runs if r.label == "imagenet+upscaled")
    assert upscaled.spec["input_size"] == 64 and upscaled.spec["epochs"] == 3
    with pytest.raises(SpecError, match="explain_input_size: must be larger than input_size"):
        plan_explain(resolve_profile("smoke", {"explain_input_size": "32"}), seeds=1, base_seed=0)


def test_bn_and_augment_overrides_are_typed_and_bn_applies_to_finetune_only() -> None:
    values = resolve_profile("smoke", {"augment": "yes", "tune_bn": "frozen"})
    assert values["augment"] is True
    plan = plan_all(values, seeds=1, base_seed=0, photo="/p.jpg")
    specs = {r.label: r.spec for r in plan.runs if r.kind == RunKind.TRAIN}
    assert specs["finetune"]["tune_bn"] == "frozen" and "tune_bn" not in specs["scratch"]
    assert all(s["augment"] is True for s in specs.values())
    with pytest.raises(SpecError, match="augment: expected true or false"):
        resolve_profile("smoke", {"augment": "maybe"})


def test_default_photo_is_the_shipped_dog() -> None:
    import hashlib

    from orchestrator.submit import check_image, default_photo

    photo = default_photo()
    check_image(photo)
    assert photo.name == "dog.jpg"
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == (
        "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866"
    )


def test_a_set_of_a_key_a_regime_does_not_read_keeps_its_identity() -> None:
    def identities(**overrides: str) -> dict[str, str]:
        plan = plan_all(resolve_profile("smoke", overrides), seeds=1, base_seed=0, photo="/p/dog.jpg")
        hashes: dict[str, str] = {}
        for run in plan.runs:
            hashes[run.key] = run.identity("code", tuple(hashes[k] for k in run.depends_on))
        return hashes

    base, epochs, tune_lr = identities(), identities(epochs="8"), identities(tune_lr="0.001")
    changed_by_epochs = {k for k in base if base[k] != epochs[k]}
    # `epochs` is scratch's and imagenet's (and the visualizations of the imagenet model), not finetune's.
    assert changed_by_epochs == {"train/scratch/s0", "train/imagenet/s0"} | {
        k for k in base if k.startswith("visualize/")
    }
    assert {k for k in base if base[k] != tune_lr[k]} == {"train/finetune/s0"}
