"""The estimate printed before a long plan: from rates measured in the database, else documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.profiles import resolve_profile
from contract.records import EpochRecord
from contract.settings import load_settings
from orchestrator import estimate
from orchestrator.estimate import Device
from orchestrator.plans import plan_all
from orchestrator.preflight import Work
from storage import repository as repo
from storage.db import Database, get_database
from storage.models import RunKind, RunStatus

CPU = Device(prefix="CPU Test CPU (", words="the test CPU", cpu=True)
GPU = Device(prefix="GPU Test GPU", words="the test GPU", cpu=False)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = get_database(load_settings({"CONVLAB_HOME": str(tmp_path / "home")}))
    database.ensure_schema()
    return database


def work(profile: str) -> list[Work]:
    plan = plan_all(resolve_profile(profile), seeds=1, base_seed=0, photo="/p.jpg")
    return [(r.kind, r.spec, r.label) for r in plan.runs]


def record_training(db: Database, profile: str, device: str, seconds: list[float]) -> None:
    """A finished quick/paper training measured on ``device``, one epoch per entry of ``seconds``."""
    spec = next(spec for kind, spec, _ in work(profile) if kind == RunKind.TRAIN)
    with db.session() as s:
        run = repo.create_run(
            s, sweep_id=None, kind=RunKind.TRAIN, label="scratch", spec=spec, spec_hash="h", seed=0
        )
        claimed = repo.claim_run(s, run.id, worker="w", device=device, lease_seconds=60)
        assert claimed is not None
        for epoch, took in enumerate(seconds, start=1):
            repo.record_epoch(
                s,
                run.id,
                EpochRecord(
                    epoch=epoch,
                    phase="train",
                    loss=1.0,
                    accuracy=0.5,
                    val_loss=1.0,
                    val_accuracy=0.5,
                    lr=1e-4,
                    seconds=took,
                    images_per_second=1.0,
                ),
                fence=claimed.fence,
            )
        repo.finish_run(s, run.id, RunStatus.SUCCEEDED, fence=claimed.fence)


def test_measured_epochs_on_the_same_device_give_the_rate(db: Database) -> None:
    # quick: 10,000 training + 2,000 validation images = 10,666.7 image-equivalents per epoch.
    record_training(db, "quick", "CPU Test CPU (tensorflow)", [40.0, 10.0, 10.0, 12.0])  # epoch 1 traces
    with db.session(readonly=True) as s:
        found = estimate.estimate(s, work("quick"), CPU)
    assert found is not None
    rate = 10_666.67 / 10.0  # the median of epochs 2-4; the first epoch is left out
    trainings = (6 + 6 + 6) * 10_666.67 / rate
    # Six tasks, and one trace: the three trainings share one graph (the kept compiled model).
    tasks = 6 * estimate.TASK_SECONDS + estimate.TRACE_SECONDS
    assert found.seconds == pytest.approx(trainings + tasks, rel=0.01)
    assert found.basis == ("1,067 images/s for alpha 0.25, measured by 3 earlier epochs",)


def test_another_device_measured_nothing_for_this_one(db: Database) -> None:
    record_training(db, "quick", "CPU Other CPU (tensorflow)", [10.0, 10.0])
    with db.session(readonly=True) as s:
        found = estimate.estimate(s, work("quick"), CPU)
    assert found is not None and "no run here measured it yet" in found.basis[0]


def test_without_a_measurement_a_gpu_gets_no_estimate(db: Database) -> None:
    with db.session(readonly=True) as s:
        assert estimate.estimate(s, work("paper"), GPU) is None
        assert estimate.warning_lines(s, work("paper"), GPU, {"quick": work("quick")}) == []


def test_a_long_plan_is_announced_with_the_faster_profiles(db: Database) -> None:
    with db.session(readonly=True) as s:
        lines = estimate.warning_lines(
            s, work("paper"), CPU, {"quick": work("quick"), "smoke": work("smoke")}
        )
        short = estimate.warning_lines(s, work("quick"), CPU, {"smoke": work("smoke")})
    assert len(lines) == 2, lines
    # 180 epochs of 53,333 image-equivalents at the documented 800 images/s: about 3 h 20 min.
    assert lines[0].startswith("estimate: about 3h2") and "the test CPU" in lines[0]
    assert "800 images/s for alpha 1.0" in lines[0] and "no run here measured it yet" in lines[0]
    assert lines[1].startswith("faster: --profile quick (about ") and "--profile smoke" in lines[1]
    assert short == []  # minutes: nothing to announce


def test_remote_workers_are_classed_by_their_devices() -> None:
    assert estimate.remote_device([]) is None
    gpu = estimate.remote_device(["CPU", "GPU 0"])
    assert gpu is not None and gpu.prefix == "GPU" and not gpu.cpu
    cpu = estimate.remote_device(["CPU x2 slots"])
    assert cpu is not None and cpu.prefix == "CPU" and not cpu.cpu  # documented rates are for this box only


def test_a_documented_cpu_rate_is_scaled_by_the_pixels_of_a_larger_input(db: Database) -> None:
    """An upscaled input (the explain plan's 128x128) does 16 times the work of the 32x32 the rate was
    measured at: a CPU estimate must grow with it, not stay at the 32x32 figure."""
    from contract.specs import TrainSpec

    small = TrainSpec(regime="scratch", seed=0, alpha=0.25, epochs=1).to_dict()
    large = {**small, "input_size": 128}
    with db.session(readonly=True) as s:
        at_32 = estimate.estimate(s, [(RunKind.TRAIN, small, "scratch")], CPU)
        at_128 = estimate.estimate(s, [(RunKind.TRAIN, large, "scratch")], CPU)
    assert at_32 is not None and at_128 is not None
    fixed = estimate.TASK_SECONDS + estimate.TRACE_SECONDS  # neither grows with the input
    assert at_128.seconds - fixed == pytest.approx(16 * (at_32.seconds - fixed))
    assert "scaled by the pixel count" in at_128.basis[0]


def test_each_graph_is_traced_once_in_a_plan(db: Database) -> None:
    """Trainings of one graph share a trace (the kept model); augmentation or frozen BatchNorm is another."""
    from contract.specs import TrainSpec

    plain = TrainSpec(regime="scratch", seed=0, alpha=0.25, epochs=1).to_dict()
    again = {**plain, "seed": 1}
    augmented = {**plain, "augment": True}
    frozen = TrainSpec(regime="finetune", seed=0, alpha=0.25, tune_bn="frozen").to_dict()

    def seconds(*specs: dict[str, object]) -> float:
        with db.session(readonly=True) as s:
            found = estimate.estimate(s, [(RunKind.TRAIN, spec, "x") for spec in specs], CPU)
        assert found is not None
        return found.seconds

    one = seconds(plain)
    assert seconds(plain, again) == pytest.approx(2 * one - estimate.TRACE_SECONDS)
    assert seconds(plain, augmented) == pytest.approx(2 * one)
    assert seconds(plain, frozen) - seconds(frozen) == pytest.approx(one)
