"""The run state machine: compare-and-set transitions and fencing, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from contract.records import EpochRecord
from storage import repository as repo
from storage.db import Database
from storage.errors import IllegalTransition, LeaseLost, NotFound
from storage.models import ArtifactKind, Run, RunStatus, utcnow

from .helpers import epoch, make_run


def _claim(db: Database, run_id: str, worker: str = "w1", lease: float = 60) -> Run | None:
    with db.session() as s:
        return repo.claim_run(s, run_id, worker=worker, device="cpu", lease_seconds=lease)


def _age_heartbeat(db: Database, run_id: str, seconds: float = 120) -> None:
    """What a paused or dead worker looks like: its last heartbeat is long ago."""
    with db.session() as s:
        s.execute(
            update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_claim_then_finish(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    run = _claim(db, run_id)
    assert run is not None
    assert run.status == RunStatus.RUNNING and run.status.is_terminal is False
    assert (run.worker, run.device, run.attempts, run.fence) == ("w1", "cpu", 1, 1)
    assert run.started_at is not None and run.heartbeat_at is not None
    with db.session() as s:
        assert repo.heartbeat(s, run_id, 1)
        assert not repo.heartbeat(s, run_id, 2)
        assert not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=0)
        assert repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=1)
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert run.status is RunStatus.SUCCEEDED
        assert run.finished_at is not None and run.finished_at >= run.started_at  # both aware UTC


def test_finished_runs_never_go_back(db: Database) -> None:
    with db.session() as s:
        done = make_run(s, label="done").id
        cancelled = make_run(s, label="cancelled").id
    claimed = _claim(db, done)
    assert claimed is not None
    with db.session() as s:
        assert repo.finish_run(s, done, RunStatus.SUCCEEDED, fence=claimed.fence)
        assert repo.request_cancel(s, cancelled, lease_seconds=60) is RunStatus.CANCELLED
    for run_id in (done, cancelled):
        assert _claim(db, run_id, lease=0) is None  # succeeded/cancelled -> running: refused
        with db.session() as s:
            assert not repo.finish_run(s, run_id, RunStatus.FAILED, fence=claimed.fence)
            assert not repo.fail_run(s, run_id, "late failure")
            assert not repo.hand_back_run(s, run_id, fence=claimed.fence)
            assert not repo.requeue_stale_run(s, run_id, lease_seconds=0)
            assert not repo.heartbeat(s, run_id, claimed.fence)
    with db.session() as s:
        with pytest.raises(IllegalTransition, match=done):
            repo.retry_run(s, done)  # succeeded is final
        with pytest.raises(IllegalTransition, match="succeeded"):
            repo.request_cancel(s, done, lease_seconds=60)
        assert repo.get_run(s, done).status is RunStatus.SUCCEEDED
        assert repo.get_run(s, cancelled).status is RunStatus.CANCELLED


def test_finish_needs_a_terminal_status(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    with db.session() as s, pytest.raises(ValueError):
        repo.finish_run(s, run_id, RunStatus.QUEUED, fence=1)


def test_takeover_only_after_the_lease(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    assert _claim(db, run_id, "w1") is not None
    assert _claim(db, run_id, "w2", lease=60) is None  # fresh heartbeat: w1 still holds it
    with db.session() as s:
        assert repo.stale_runs(s, lease_seconds=60) == []
    _age_heartbeat(db, run_id)
    with db.session() as s:
        assert [r.id for r in repo.stale_runs(s, lease_seconds=60)] == [run_id]
    run = _claim(db, run_id, "w2", lease=60)
    assert run is not None and run.worker == "w2" and run.attempts == 2 and run.fence == 2
    with db.session() as s:
        assert not repo.heartbeat(s, run_id, 1)  # the old attempt learns it lost the run
        assert not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=1)
        assert [r.id for r in repo.runs_held_by(s, "w2")] == [run_id]


@pytest.mark.parametrize("same_worker_name", [False, True], ids=["other-worker", "sibling-slot"])
def test_a_stale_attempt_can_write_nothing_after_a_takeover(db: Database, same_worker_name: bool) -> None:
    """Ownership is the attempt's token, not the worker's name: two slots of one worker (or two workers
    started with the same --name) share a name, and the stalled one must still be shut out."""
    with db.session() as s:
        run_id = make_run(s).id
    old = _claim(db, run_id, "w1")
    assert old is not None
    with db.session() as s:
        epoch(s, run_id, 1, fence=old.fence, loss=1.0)
        repo.record_epoch(
            s,
            run_id,
            EpochRecord(**_values(2, 0.9)),
            fence=old.fence,
            checkpoint="runs/x/attempt-1/state-e0002.json",
        )
    _age_heartbeat(db, run_id)  # the old attempt is paused past its lease
    new = _claim(db, run_id, "w1" if same_worker_name else "w2")
    assert new is not None and new.fence == old.fence + 1
    with db.session() as s:
        epoch(s, run_id, 3, fence=new.fence, loss=0.7)
        assert repo.get_run(s, run_id).checkpoint == "runs/x/attempt-1/state-e0002.json"  # resumed from it
    # The old attempt wakes up: every kind of write is refused, nothing it tries reaches the database.
    refused = [
        lambda s: epoch(s, run_id, 3, fence=old.fence, loss=99.0),
        lambda s: repo.record_epoch(
            s,
            run_id,
            EpochRecord(**_values(3, 99.0)),
            fence=old.fence,
            checkpoint="runs/x/attempt-1/state-e0003.json",
        ),
        lambda s: repo.add_artifact(
            s, run_id, fence=old.fence, kind=ArtifactKind.IMAGE, path="runs/x/zombie.png", sha256="z", size=1
        ),
        lambda s: repo.record_environment(s, run_id, {"zombie": True}, fence=old.fence),
        lambda s: repo.commit_checkpoint_files(s, run_id, fence=old.fence, files=[("p", "z", 1)]),
        lambda s: repo.clear_artifacts(s, run_id, fence=old.fence),
    ]
    for write in refused:
        with pytest.raises(LeaseLost), db.session() as s:
            write(s)
    with db.session() as s:
        assert not repo.heartbeat(s, run_id, old.fence)
        assert not repo.hand_back_run(s, run_id, fence=old.fence)
        assert not repo.finish_run(s, run_id, RunStatus.FAILED, fence=old.fence, error="zombie")
        run = repo.get_run(s, run_id)
        assert (run.status, run.fence, run.environment) == (RunStatus.RUNNING, new.fence, None)
        assert run.checkpoint == "runs/x/attempt-1/state-e0002.json"
        assert [(m.epoch, m.loss) for m in repo.metric_history(s, run_id)] == [(1, 1.0), (2, 0.9), (3, 0.7)]
        assert repo.artifacts_of(s, run_id) == []
        assert repo.finish_run(s, run_id, RunStatus.SUCCEEDED, fence=new.fence)


def _values(n: int, loss: float) -> dict[str, object]:
    return {
        "epoch": n,
        "phase": "train",
        "loss": loss,
        "accuracy": 0.5,
        "val_loss": None,
        "val_accuracy": None,
        "lr": 0.01,
        "seconds": 1.0,
        "images_per_second": 10.0,
    }


def test_leases_use_the_database_clock_not_the_hosts(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose clock runs an hour behind must not look dead the moment it claims or beats."""
    import sys

    import storage.repository  # noqa: F401 - its modules must be loaded to be patched

    with db.session() as s:
        run_id = make_run(s).id
    # Every place Python's clock could reach the database from: the models' defaults and each
    # repository module that imported ``utcnow`` (patching only storage.models would miss those).
    behind = lambda: utcnow() - timedelta(hours=1)  # noqa: E731
    patched = [m for name, m in sys.modules.items() if name.startswith("storage.") and hasattr(m, "utcnow")]
    assert any(m.__name__ == "storage.models" for m in patched)
    for module in patched:
        monkeypatch.setattr(module, "utcnow", behind)
    run = _claim(db, run_id)
    assert run is not None
    with db.session() as s:  # just claimed: fresh, whatever this host's clock says
        assert repo.stale_runs(s, lease_seconds=60) == []
        assert not repo.requeue_stale_run(s, run_id, lease_seconds=60)
    with db.session() as s:
        assert repo.heartbeat(s, run_id, run.fence)
    with db.session() as s:  # just beaten: still fresh
        assert repo.stale_runs(s, lease_seconds=60) == []
        repo.upsert_worker(s, name="w1", host="h", pid=1, device="cpu", slots=1)
    with db.session() as s:
        assert [w.name for w in repo.live_workers(s, within_seconds=60)] == ["w1"]


def test_cancel_semantics(db: Database) -> None:
    with db.session() as s:
        queued = make_run(s, label="q").id
        running = make_run(s, label="r").id
    claimed = _claim(db, running)
    assert claimed is not None
    with db.session() as s:
        assert repo.request_cancel(s, queued, lease_seconds=60) is RunStatus.CANCELLED
        assert repo.request_cancel(s, running, lease_seconds=60) is RunStatus.RUNNING
        assert repo.request_cancel(s, running, lease_seconds=60) is RunStatus.RUNNING  # twice is harmless
        assert repo.cancel_requested(s, running)
    with db.session() as s:
        assert repo.get_run(s, queued).status is RunStatus.CANCELLED
        run = repo.get_run(s, running)
        assert run.status is RunStatus.RUNNING and run.cancel_requested
        assert repo.finish_run(s, running, RunStatus.CANCELLED, fence=claimed.fence)
    with db.session() as s:
        assert repo.get_run(s, running).status is RunStatus.CANCELLED
        with pytest.raises(IllegalTransition):
            repo.request_cancel(s, running, lease_seconds=60)


def test_cancel_means_cancel_when_the_worker_is_gone(db: Database) -> None:
    with db.session() as s:
        orphan = make_run(s, label="orphan").id
        requested = make_run(s, label="requested").id
    assert _claim(db, orphan) is not None and _claim(db, requested) is not None
    _age_heartbeat(db, orphan)
    with db.session() as s:  # nobody is left to stop it at an epoch boundary: cancelled at once
        assert repo.request_cancel(s, orphan, lease_seconds=60) is RunStatus.CANCELLED
        assert repo.request_cancel(s, requested, lease_seconds=60) is RunStatus.RUNNING
    _age_heartbeat(db, requested)  # ... and then its worker died
    assert _claim(db, requested, "w2") is None  # a requested cancel is never claimed again
    with db.session() as s:
        assert not repo.requeue_stale_run(s, requested, lease_seconds=600)  # heartbeat 120 s old: not stale
        assert repo.cancel_stale_run(s, requested, lease_seconds=60)
    with db.session() as s:
        assert repo.get_run(s, orphan).status is RunStatus.CANCELLED
        assert repo.get_run(s, requested).status is RunStatus.CANCELLED


def test_retry_resets_a_failed_or_cancelled_run(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    claimed = _claim(db, run_id)
    assert claimed is not None
    with db.session() as s:
        assert repo.request_cancel(s, run_id, lease_seconds=60) is RunStatus.RUNNING
        assert repo.finish_run(s, run_id, RunStatus.FAILED, fence=claimed.fence, error="boom", traceback="tb")
    with db.session() as s:
        repo.mark_enqueued(s, run_id)
        repo.retry_run(s, run_id)
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert run.status is RunStatus.QUEUED
        assert (run.attempts, run.error, run.traceback, run.cancel_requested, run.enqueued_at) == (
            0,
            None,
            None,
            False,
            None,
        )
        with pytest.raises(IllegalTransition, match="queued"):
            repo.retry_run(s, run_id)  # queued -> queued is not a retry
    again = _claim(db, run_id)
    assert again is not None and again.fence == claimed.fence + 1  # the token never goes back
    with db.session() as s, pytest.raises(IllegalTransition, match="running"):
        repo.retry_run(s, run_id)


def test_fail_and_hand_back(db: Database) -> None:
    with db.session() as s:
        blocked = make_run(s, label="blocked").id
        handed = make_run(s, label="handed").id
        assert repo.fail_run(s, blocked, "dependency failed")
        assert not repo.hand_back_run(s, handed, fence=0)  # queued: nothing to hand back
    claimed = _claim(db, handed)
    assert claimed is not None
    with db.session() as s:
        assert not repo.hand_back_run(s, handed, fence=claimed.fence + 1)
        assert repo.hand_back_run(s, handed, fence=claimed.fence)
    with db.session() as s:
        run = repo.get_run(s, handed)
        assert (run.status, run.worker, run.enqueued_at, run.attempts) == (RunStatus.QUEUED, None, None, 0)
        assert repo.get_run(s, blocked).error == "dependency failed"


def test_release_worker_runs_hands_back_what_a_dead_worker_held(db: Database) -> None:
    with db.session() as s:
        mine = make_run(s, label="mine").id
        theirs = make_run(s, label="theirs").id
    assert _claim(db, mine, "local") is not None and _claim(db, theirs, "other") is not None
    with db.session() as s:
        assert repo.release_worker_runs(s, "local") == [mine]
    with db.session() as s:
        assert (repo.get_run(s, mine).status, repo.get_run(s, mine).attempts) == (RunStatus.QUEUED, 0)
        assert repo.get_run(s, theirs).status is RunStatus.RUNNING


def test_missing_ids_raise_not_found(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(NotFound, match="r-nope"):
            repo.get_run(s, "r-nope")
        with pytest.raises(NotFound, match="s-nope"):
            repo.get_sweep(s, "s-nope")
        with pytest.raises(NotFound):
            repo.retry_run(s, "r-nope")
        with pytest.raises(NotFound):
            repo.request_cancel(s, "r-nope", lease_seconds=60)
        with pytest.raises(NotFound):
            repo.mark_enqueued(s, "r-nope")
        assert repo.claim_run(s, "r-nope", worker="w", device="cpu", lease_seconds=1) is None


def test_reaper_requeue_keeps_the_attempt_and_needs_a_stale_heartbeat(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s, label="lost").id
    assert _claim(db, run_id) is not None
    with db.session() as s:
        assert not repo.requeue_stale_run(s, run_id, lease_seconds=60)  # heartbeat is fresh: still alive
        assert not repo.fail_run(s, run_id, "cap", lost_after_seconds=60)
    _age_heartbeat(db, run_id)
    with db.session() as s:
        assert repo.requeue_stale_run(s, run_id, lease_seconds=60)  # stale: taken back
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert (run.status, run.attempts) == (RunStatus.QUEUED, 1)  # the loss counts towards the cap


def test_a_message_taken_by_a_dead_worker_is_found_after_the_lease(db: Database) -> None:
    with db.session() as s:
        lost = make_run(s, label="lost").id
        waiting = make_run(s, label="waiting").id
        held = make_run(s, label="held").id
        for run_id in (lost, waiting, held):
            repo.mark_enqueued(s, run_id)
        repo.upsert_worker(s, name="alive", host="h", pid=1, device="cpu", slots=1)
        repo.upsert_worker(s, name="dead", host="h", pid=2, device="cpu", slots=1)
        repo.stop_worker(s, "dead")
        assert repo.mark_received(s, lost, "dead")
        assert repo.mark_received(s, held, "alive")  # waiting: still in the broker, nobody took it
    with db.session() as s:
        assert repo.lost_messages(s, lease_seconds=60) == []  # received just now: give it the lease
        s.execute(update(Run).values(received_at=utcnow() - timedelta(seconds=120)))
    with db.session() as s:
        assert [r.id for r in repo.lost_messages(s, lease_seconds=60)] == [lost]
        assert not repo.forget_lost_message(s, lost, "alive")  # only the marks of that dead worker
        assert repo.forget_lost_message(s, lost, "dead")
    with db.session() as s:
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [lost]  # the reaper sends it again
    run = _claim(db, held)
    assert run is not None and (run.received_by, run.received_at) == (None, None)


def test_a_receipt_recorded_before_the_sender_marks_the_message_sent_is_kept(db: Database) -> None:
    """The sender records `enqueued_at` after the message went out; a fast worker may have taken it and
    recorded its receipt first. That receipt must survive, or a message lost with that worker is missed."""
    with db.session() as s:
        run_id = make_run(s).id
        assert repo.mark_received(s, run_id, "fast-worker")
        repo.mark_enqueued(s, run_id)
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert run.received_by == "fast-worker" and run.enqueued_at is not None
