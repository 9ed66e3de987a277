from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage import repository as repo
from storage.db import Database
from storage.models import ArtifactKind, EpochMetric, Run, RunKind, RunStatus

from .helpers import epoch, make_run, make_sweep, start


def test_duplicate_epoch_keeps_one_row_with_the_latest_values(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
        fence = start(s, run_id)
    with db.session() as s:
        epoch(s, run_id, 1, fence=fence, loss=0.9)
        epoch(s, run_id, 2, fence=fence, loss=0.8)
    with db.session() as s:  # the same attempt records epoch 1 again (a resumed checkpoint's history)
        epoch(s, run_id, 1, fence=fence, loss=0.5, phase="head")
    with db.session() as s:
        rows = repo.metric_history(s, run_id)
        assert [(m.epoch, m.loss, m.phase) for m in rows] == [(1, 0.5, "head"), (2, 0.8, "train")]
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 2
        run = repo.get_run(s, run_id)
        assert run.last_epoch == 2  # never moves backwards
        assert run.heartbeat_at is not None


def test_sweep_runs_returns_latest_metrics(db: Database) -> None:
    with db.session() as s:
        sweep_id = make_sweep(s)
        a = make_run(s, sweep_id, label="a").id
        b = make_run(s, sweep_id, label="b").id
        other = make_run(s, label="other sweep").id
    with db.session() as s:
        fence_a, fence_other = start(s, a), start(s, other)
        for n in (1, 2, 3):
            epoch(s, a, n, fence=fence_a)
        epoch(s, other, 1, fence=fence_other)
    with db.session() as s:
        rows = repo.sweep_runs(s, sweep_id)
    assert [r.id for r in rows] == [a, b]
    ra, rb = rows
    assert ra.last_epoch == 3 and ra.loss == pytest.approx(1 / 3) and ra.val_accuracy == pytest.approx(0.27)
    assert ra.seconds_per_epoch == pytest.approx(2.0)  # mean of 1, 2, 3
    assert ra.images_per_second == pytest.approx(300.0)
    assert (
        ra.status is RunStatus.RUNNING
        and rb.status is RunStatus.QUEUED
        and ra.kind is RunKind.TRAIN
        and ra.spec == {"regime": "a"}
    )
    assert rb.val_accuracy is None and rb.seconds_per_epoch is None
    with pytest.raises(AttributeError):
        ra.status = RunStatus.FAILED  # type: ignore[misc]  # frozen
    with db.session() as s:
        assert repo.sweep_runs(s, "s-none") == []


def test_ready_unenqueued_runs_respect_dependencies(db: Database) -> None:
    with db.session() as s:
        sweep_id = make_sweep(s)
        train = make_run(s, sweep_id, label="train").id
        viz = make_run(s, sweep_id, label="viz", kind=RunKind.VISUALIZE, depends_on=[train]).id
        after_viz = make_run(s, sweep_id, label="after", kind=RunKind.VISUALIZE, depends_on=[viz]).id
        report = make_run(s, sweep_id, label="report", kind=RunKind.REPORT, depends_on=[train, viz]).id
        assert [r.id for r in repo.dependencies_of(s, report)] == [train, viz]
        assert {r.id for r in repo.dependents_of(s, train)} == {viz, report}
        repo.mark_enqueued(s, after_viz)  # keep it out of the way of the assertions below
    with db.session() as s:
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [train]
        repo.mark_enqueued(s, train)
    with db.session() as s:
        assert repo.ready_unenqueued_runs(s) == []
        assert repo.finish_run(s, train, RunStatus.SUCCEEDED, fence=start(s, train))
    with db.session() as s:
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [viz]
        assert repo.fail_run(s, viz, "out of memory")
    with db.session() as s:
        # A report waits for its dependencies to end, not to succeed: a partial sweep is reported.
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [report]
        blocked = repo.runs_blocked_by_failure(s)
        assert [(r.id, d.id) for r, d in blocked] == [(after_viz, viz)]


def test_latest_sweep_and_reuse_lookup(db: Database) -> None:
    with db.session() as s:
        assert repo.latest_sweep(s) is None
        first = make_sweep(s)
        original = make_run(s, first, spec_hash="same").id
        assert repo.find_succeeded_by_hash(s, "same") is None
        assert repo.finish_run(s, original, RunStatus.SUCCEEDED, fence=start(s, original))
    with db.session() as s:
        second = make_sweep(s)
        reused = make_run(s, second, spec_hash="same", status=RunStatus.SUCCEEDED, reused_run_id=original)
        assert reused.finished_at is not None
    with db.session() as s:
        latest = repo.latest_sweep(s)
        assert latest is not None and latest.id == second
        found = repo.find_succeeded_by_hash(s, "same")
        assert found is not None and found.id == original


def test_artifact_records_upsert_per_path(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
        fence = start(s, run_id)
        repo.add_artifact(
            s,
            run_id,
            fence=fence,
            kind=ArtifactKind.CHECKPOINT,
            path=f"{run_id}/ckpt.keras",
            sha256="a",
            size=1,
        )
    with db.session() as s:
        art = repo.add_artifact(
            s,
            run_id,
            fence=fence,
            kind=ArtifactKind.CHECKPOINT,
            path=f"{run_id}/ckpt.keras",
            sha256="b",
            size=2,
        )
        assert (art.sha256, art.bytes, art.kind) == ("b", 2, ArtifactKind.CHECKPOINT)
        repo.add_artifact(
            s, run_id, fence=fence, kind=ArtifactKind.IMAGE, path=f"{run_id}/a.png", sha256="c", size=3
        )
    with db.session() as s:
        arts = repo.artifacts_of(s, run_id)
        assert [(a.path, a.sha256, a.kind) for a in arts] == [
            (f"{run_id}/a.png", "c", ArtifactKind.IMAGE),
            (f"{run_id}/ckpt.keras", "b", ArtifactKind.CHECKPOINT),
        ]


def test_workers(db: Database) -> None:
    with db.session() as s:
        repo.upsert_worker(s, name="gpu0@box", host="box", pid=10, device="GPU:0", slots=1)
        repo.upsert_worker(s, name="cpu@box", host="box", pid=11, device="cpu", slots=2)
    with db.session() as s:
        assert repo.touch_worker(s, "gpu0@box")
        assert repo.stop_worker(s, "cpu@box")
        assert not repo.touch_worker(s, "ghost")
    with db.session(readonly=True) as s:
        assert [w.name for w in repo.live_workers(s, within_seconds=60)] == ["gpu0@box"]
    with db.session() as s:  # a restarted worker re-registers under the same name
        w = repo.upsert_worker(s, name="cpu@box", host="box", pid=12, device="cpu", slots=2)
        assert w.pid == 12 and w.stopped_at is None
        assert len(repo.live_workers(s, within_seconds=60)) == 2


def test_whose_results_count_is_decided_in_one_place(db: Database) -> None:
    with db.session() as s:
        original = make_run(s, spec_hash="same").id
        assert repo.finish_run(s, original, RunStatus.SUCCEEDED, fence=start(s, original))
        reused = make_run(s, spec_hash="same", status=RunStatus.SUCCEEDED, reused_run_id=original)
        run = repo.get_run(s, original)
        assert (run.results_run_id, reused.results_run_id) == (original, original)
        assert repo.results_source(s, reused).id == original and repo.results_source(s, run) is run
        assert repo.run_summary(s, reused.id).results_run_id == original


def _age(db: Database, model: type, key: object, seconds: float, *columns: str) -> None:
    """Move ``columns`` of one run ``seconds`` into the past (what a long wait looks like)."""
    from datetime import timedelta

    from sqlalchemy import update

    from storage.models import utcnow

    past = utcnow() - timedelta(seconds=seconds)
    with db.session() as s:
        s.execute(update(model).where(model.id == key).values(**dict.fromkeys(columns, past)))  # type: ignore[attr-defined]


def test_a_message_that_no_task_claimed_is_found_after_the_bound(db: Database) -> None:
    """A task that failed before its claim and could neither say so nor give its message back: the
    reaper finds the run once the receipt is that old, and only then; a message still waiting in the
    broker (no receipt) is never taken for lost."""
    with db.session() as s:
        received = make_run(s, label="received").id
        waiting = make_run(s, label="waiting").id
        for run_id in (received, waiting):
            repo.mark_enqueued(s, run_id)
        repo.upsert_worker(s, name="w1", host="h", pid=1, device="cpu", slots=1)
        assert repo.mark_received(s, received, "w1")  # a live worker took it, then its task failed
    with db.session() as s:  # received just now: a task claims within seconds
        assert repo.unclaimed_messages(s, after_seconds=300) == []
        assert not repo.forget_unclaimed_message(s, received, after_seconds=300)
    for run_id in (received, waiting):
        _age(db, Run, run_id, 600, "enqueued_at", "received_at")
    with db.session() as s:
        assert [r.id for r in repo.unclaimed_messages(s, after_seconds=300)] == [received]
        assert repo.lost_messages(s, lease_seconds=60) == []  # its worker is alive: not that case
        assert repo.forget_unclaimed_message(s, received, after_seconds=300)
        assert not repo.forget_unclaimed_message(s, received, after_seconds=300)  # another reaper: no
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [received]  # sent again
        repo.mark_enqueued(s, received)
        assert repo.mark_received(s, received, "w1")
    with db.session() as s:  # sent and received again just now: not again before the bound
        assert repo.unclaimed_messages(s, after_seconds=300) == []
    _age(db, Run, received, 600, "enqueued_at", "received_at")
    with db.session() as s:  # claimed: the receipt is gone with the message
        start(s, received)
        assert repo.unclaimed_messages(s, after_seconds=300) == []


def test_the_reaper_names_the_worker_a_run_was_requeued_from(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    from contract.settings import Settings
    from worker.app import create_app
    from worker.reaper import reap

    with db.session() as s:
        run_id = make_run(s).id
        start(s, run_id, worker="lost-worker@host")
    _age(db, Run, run_id, 120, "heartbeat_at")
    app = create_app(Settings(home=Path("unused"), broker_url="memory://"))
    with caplog.at_level("WARNING", logger="worker.reaper"):
        report = reap(app, db, lease_seconds=60, resend_seconds=300)
    assert report.requeued == (run_id,) and report.sent == (run_id,)
    assert f"run {run_id} lost its worker lost-worker@host; re-queued" in caplog.text
