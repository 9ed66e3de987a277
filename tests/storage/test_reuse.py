"""Reuse, on SQLite and PostgreSQL: what a run's identity holds, one decision for every caller, no damaged
result reused, and an identical live run joined (by the database's unique index, not a read)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from contract.profiles import resolve_profile
from contract.records import EpochRecord
from orchestrator.check import check, repair
from orchestrator.plans import Plan, plan_all, plan_train, plan_visualize
from orchestrator.submit import Submitted, create_sweep, plan_work
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.folder_store import FolderStore
from storage.models import ArtifactKind, RunKind, RunStatus
from tests.storage.helpers import make_run, start
from worker.dispatch import fail_blocked

CODE = "c" * 64
EPOCH = {"phase": "train", "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4, "lr": 1e-4}


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return FolderStore(tmp_path / "artifacts")


def submit(db: Database, store: ArtifactStore, plan: Plan, *, force: bool = False) -> Submitted:
    with db.session() as s:
        return create_sweep(
            s,
            plan,
            profile_name="smoke",
            overrides={},
            code_version="test",
            code_identity=CODE,
            force=force,
            max_attempts=3,
            store=store,
        )


def finish(db: Database, store: ArtifactStore, run_id: str) -> None:
    """Run it as a worker would: a training leaves a checkpoint chain, a visualization one image."""
    with db.session() as s:
        fence = start(s, run_id)
        run = repo.get_run(s, run_id)
        kind, epochs = run.kind, run.total_epochs
    folder = f"runs/{run_id}/attempt-{fence}"
    if kind == RunKind.TRAIN:
        history = [{"epoch": n, "loss": 1.0 / n, **EPOCH} for n in range(1, epochs + 1)]
        state = {"epoch": epochs, "model_file": f"model-e{epochs:04d}.keras", "history": history}
        model = store.write_bytes(
            f"{folder}/checkpoint/model-e{epochs:04d}.keras", b"weights " + run_id.encode()
        )
        state_file = store.write_bytes(
            f"{folder}/checkpoint/state-e{epochs:04d}.json", json.dumps(state).encode()
        )
        with db.session() as s:
            for record in history:
                values = EpochRecord(seconds=1.0, images_per_second=10.0, **record)  # type: ignore[arg-type]
                checkpoint = state_file.path if record["epoch"] == epochs else None
                repo.record_epoch(s, run_id, values, fence=fence, checkpoint=checkpoint)
            files = [(f.path, f.sha256, f.size) for f in (model, state_file)]
            repo.commit_checkpoint_files(s, run_id, fence=fence, files=files)
    else:
        image = store.write_bytes(f"{folder}/input.png", b"png " + run_id.encode())
        with db.session() as s:
            repo.add_artifact(
                s, run_id, fence=fence, kind=ArtifactKind.IMAGE, path=image.path, sha256=image.sha256, size=4
            )
    with db.session() as s:
        assert repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=fence)


def finish_all(db: Database, store: ArtifactStore, done: Submitted) -> None:
    with db.session() as s:
        todo = [r for r in done.run_ids.values() if repo.get_run(s, r).status == RunStatus.QUEUED]
        todo = [r for r in todo if repo.get_run(s, r).reused_run_id is None]
    for run_id in todo:
        finish(db, store, run_id)


def status_of(db: Database, run_id: str) -> tuple[RunStatus, str | None]:
    with db.session(readonly=True) as s:
        run = repo.get_run(s, run_id)
        return run.status, run.reused_run_id


# ------------------------------------------------------------------ identity: what a run uses


def test_a_set_of_a_key_one_regime_does_not_use_reuses_that_regimes_run(
    db: Database, store: ArtifactStore
) -> None:
    def plan(**overrides: str) -> Plan:
        runs = [
            run
            for regime in ("scratch", "imagenet", "finetune")
            for run in plan_train(
                resolve_profile("smoke", overrides), regime=regime, seeds=1, base_seed=0
            ).runs
        ]
        return Plan(name="train", runs=tuple(runs), report=False)

    first = submit(db, store, plan())
    finish_all(db, store, first)
    epochs = submit(db, store, plan(epochs="3"))  # finetune does not read `epochs`
    assert epochs.reused == (epochs.run_ids["train/finetune/s0"],)
    finish_all(db, store, epochs)
    tune = submit(db, store, plan(tune_lr="0.001"))  # scratch and imagenet do not read `tune_lr`
    assert set(tune.reused) == {tune.run_ids["train/scratch/s0"], tune.run_ids["train/imagenet/s0"]}
    with db.session(readonly=True) as s:
        stored = repo.get_run(s, first.run_ids["train/scratch/s0"]).spec
    assert not {"head_epochs", "tune_epochs", "tune_lr", "tune_bn"} & set(stored)


# ------------------------------------------------------------------ one decision (photo case)


def test_preflight_estimate_and_create_sweep_see_the_same_decisions_for_a_photo(
    db: Database, store: ArtifactStore, tmp_path: Path
) -> None:
    from PIL import Image

    photo = tmp_path / "cat.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(photo)
    plan = plan_visualize(resolve_profile("smoke"), images=["random", str(photo)], seed=0, source="imagenet")
    staged, work = plan_work(db, store, plan, code_identity=CODE, force=False)
    assert [label for _, _, label in work] == ["random", "photo"]
    first = submit(db, store, staged)
    assert first.reused == () and first.joined == ()
    finish_all(db, store, first)

    staged, work = plan_work(db, store, plan, code_identity=CODE, force=False)
    again = submit(db, store, staged)
    assert work == [], "the pre-check judged work that create_sweep does not do"
    assert len(again.reused) == 2


# ------------------------------------------------------------------ damaged results


def test_a_damaged_training_is_not_reused_check_follows_reuse_and_repair_marks_it(
    db: Database, store: ArtifactStore
) -> None:
    plan = plan_train(resolve_profile("smoke"), regime="imagenet", seeds=1, base_seed=0)
    first = submit(db, store, plan)
    trained = first.run_ids["train/imagenet/s0"]
    finish_all(db, store, first)
    second = submit(db, store, plan)
    assert second.reused == (second.run_ids["train/imagenet/s0"],)
    assert check(db, store, second.sweep_id).intact

    with db.session(readonly=True) as s:
        model = next(a.path for a in repo.artifacts_of(s, trained) if a.path.endswith(".keras"))
    store.absolute(model).write_bytes(b"changed on disk")

    result = check(db, store, second.sweep_id)  # the cached run stands on the damaged one
    assert not result.intact
    assert [(p.run_id, p.via) for p in result.problems] == [(trained, second.run_ids["train/imagenet/s0"])]

    third = submit(db, store, plan)  # not reused: it runs again
    assert third.reused == () and [p.run_id for p in third.damaged] == [trained]
    assert status_of(db, third.run_ids["train/imagenet/s0"]) == (RunStatus.QUEUED, None)
    finish_all(db, store, third)
    assert check(db, store, third.sweep_id).intact

    assert repair(db, result.problems) == [trained]
    assert status_of(db, trained)[0] == RunStatus.FAILED
    assert repair(db, result.problems) == []  # once
    fourth = submit(db, store, plan)  # the rerun's result is the one reused now
    with db.session(readonly=True) as s:
        run = repo.get_run(s, fourth.run_ids["train/imagenet/s0"])
        assert run.reused_run_id == third.run_ids["train/imagenet/s0"]


# ------------------------------------------------------------------ live identical runs: joined


def test_an_identical_queued_run_is_joined_and_succeeds_with_it(
    db: Database, store: ArtifactStore, tmp_path: Path
) -> None:
    photo = tmp_path / "dog.png"
    photo.write_bytes(b"any bytes: staging does not decode them")
    plan = plan_all(resolve_profile("smoke"), seeds=1, base_seed=0, photo=str(photo))
    plan, _ = plan_work(db, store, plan, code_identity=CODE, force=False)
    first = submit(db, store, plan)
    second = submit(db, store, plan)
    assert set(second.joined) == {v for k, v in second.run_ids.items() if k != "report"}
    owner, follower = first.run_ids["train/imagenet/s0"], second.run_ids["train/imagenet/s0"]
    assert status_of(db, follower) == (RunStatus.QUEUED, owner)
    with db.session(readonly=True) as s:
        ready = {r.id for r in repo.ready_unenqueued_runs(s)}
    assert follower not in ready and owner in ready  # a follower is never sent

    finish(db, store, owner)  # the follower succeeds in the same transaction
    assert status_of(db, follower) == (RunStatus.SUCCEEDED, owner)
    finish_all(db, store, first)
    with db.session(readonly=True) as s:
        ended = {r.id: r.status for r in repo.sweep_runs(s, second.sweep_id)}
        report = second.run_ids["report"]
        assert report in {r.id for r in repo.ready_unenqueued_runs(s)}
    assert all(status == RunStatus.SUCCEEDED for run_id, status in ended.items() if run_id != report)
    assert check(db, store, second.sweep_id).intact


def test_cancelling_a_follower_leaves_the_run_it_follows_and_retry_re_decides(
    db: Database, store: ArtifactStore
) -> None:
    plan = plan_train(resolve_profile("smoke"), regime="scratch", seeds=1, base_seed=0)
    owner = submit(db, store, plan).run_ids["train/scratch/s0"]
    follower = submit(db, store, plan).run_ids["train/scratch/s0"]
    with db.session() as s:
        assert repo.request_cancel(s, follower, lease_seconds=60) == RunStatus.CANCELLED
    assert status_of(db, owner) == (RunStatus.QUEUED, None)
    with db.session() as s:  # retried while its run is still queued: it follows it again
        repo.retry_run(s, follower)
    assert status_of(db, follower) == (RunStatus.QUEUED, owner)

    with db.session() as s:  # the run it follows fails: the follower fails naming it
        repo.fail_run(s, owner, "out of memory")
        fail_blocked(s)
    assert status_of(db, follower) == (RunStatus.FAILED, owner)
    with db.session() as s:  # retried now, it is a run of its own
        repo.retry_run(s, follower)
        assert repo.dependencies_of(s, follower) == []
    assert status_of(db, follower) == (RunStatus.QUEUED, None)
    with db.session() as s:  # and retrying the other one makes that one follow it, not a second run
        repo.retry_run(s, owner)
    assert status_of(db, owner) == (RunStatus.QUEUED, follower)
    finish(db, store, follower)
    assert status_of(db, owner) == (RunStatus.SUCCEEDED, follower)


def test_the_database_refuses_a_second_live_executed_run_of_one_identity(db: Database) -> None:
    with db.session() as s:
        make_run(s, spec_hash="same")
    with pytest.raises(IntegrityError), db.session() as s:
        make_run(s, spec_hash="same")
    with db.session() as s:  # followers and ended runs are outside the constraint
        owner = repo.live_run_by_hash(s, "same")
        assert owner is not None
        make_run(s, spec_hash="same", reused_run_id=owner.id)
        make_run(s, spec_hash="same", status=RunStatus.FAILED)


def test_two_submits_at_the_same_moment_execute_each_identity_once(
    db: Database, store: ArtifactStore
) -> None:
    """Two threads, two transactions: both decide "execute" before either commits (the pause below);
    the index makes the second insert wait for the first transaction and fail, and it joins."""
    plan = plan_train(resolve_profile("smoke"), regime="scratch", seeds=2, base_seed=0)
    if db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises writing transactions (BEGIN IMMEDIATE): no two submits interleave")
    decided = threading.Barrier(2, timeout=30)
    waited: set[int] = set()
    results: list[Submitted] = []
    errors: list[BaseException] = []

    import orchestrator.submit as flow

    real = flow.decide_run

    def slow_decide(*args, **kwargs):  # type: ignore[no-untyped-def]
        decision = real(*args, **kwargs)
        if threading.get_ident() not in waited:  # both decide their first run before either inserts it
            waited.add(threading.get_ident())
            decided.wait()
        return decision

    def one() -> None:
        try:
            results.append(submit(db, store, plan))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    flow.decide_run = slow_decide  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        flow.decide_run = real  # type: ignore[assignment]
    assert not errors, errors
    with db.session(readonly=True) as s:
        runs = [r for done in results for r in repo.sweep_runs(s, done.sweep_id)]
        executed = {repo.get_run(s, r.id).spec_hash for r in runs if r.reused_run_id is None}
    assert len(runs) == 4 and len(executed) == 2


def test_cancelling_the_joining_sweep_leaves_every_run_of_the_first_sweep(
    db: Database, store: ArtifactStore
) -> None:
    from orchestrator.runs import cancel_sweep

    plan = plan_train(resolve_profile("smoke"), regime="imagenet", seeds=2, base_seed=0)
    first, second = submit(db, store, plan), submit(db, store, plan)
    with db.session() as s:
        start(s, first.run_ids["train/imagenet/s0"])  # one of the shared trainings is running
    cancel_sweep(db, second.sweep_id, lease_seconds=60)
    with db.session(readonly=True) as s:
        assert {str(r.status) for r in repo.sweep_runs(s, second.sweep_id)} == {"cancelled"}
        assert sorted(str(r.status) for r in repo.sweep_runs(s, first.sweep_id)) == ["queued", "running"]
        assert not any(repo.get_run(s, r).cancel_requested for r in first.run_ids.values())
