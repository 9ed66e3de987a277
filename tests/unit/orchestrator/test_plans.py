from __future__ import annotations

import pytest

from orchestrator.plans import plan_all, plan_train, plan_visualize
from storage.models import RunKind
from worker.profiles import resolve_profile
from worker.specs import SpecError


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
