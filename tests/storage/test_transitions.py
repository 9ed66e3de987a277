from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from storage import repository as repo
from storage.db import Database
from storage.errors import IllegalTransition, NotFound
from storage.models import Run, RunStatus, utcnow

from .helpers import make_run


def _claim(db: Database, run_id: str, worker: str = "w1", lease: float = 60) -> Run | None:
    with db.session() as s:
        return repo.claim_run(s, run_id, worker=worker, device="cpu", lease_seconds=lease)


def test_claim_then_finish(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    run = _claim(db, run_id)
    assert run is not None
    assert run.status == RunStatus.RUNNING and run.status.is_terminal is False
    assert (run.worker, run.device, run.attempts) == ("w1", "cpu", 1)
    assert run.started_at is not None and run.heartbeat_at is not None
    with db.session() as s:
        assert repo.heartbeat(s, run_id, "w1")
        assert not repo.heartbeat(s, run_id, "other")
        assert not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, worker="other")
        assert repo.finish_run(s, run_id, RunStatus.SUCCEEDED, worker="w1")
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert run.status is RunStatus.SUCCEEDED
        assert run.finished_at is not None and run.finished_at >= run.started_at  # both aware UTC


def test_finished_runs_never_go_back(db: Database) -> None:
    with db.session() as s:
        done = make_run(s, label="done").id
        cancelled = make_run(s, label="cancelled").id
    assert _claim(db, done) is not None
    with db.session() as s:
        assert repo.finish_run(s, done, RunStatus.SUCCEEDED)
        assert repo.request_cancel(s, cancelled) is RunStatus.CANCELLED
    for run_id in (done, cancelled):
        assert _claim(db, run_id, lease=0) is None  # succeeded/cancelled -> running: refused
        with db.session() as s:
            assert not repo.finish_run(s, run_id, RunStatus.FAILED)
            assert not repo.fail_run(s, run_id, "late failure")
            assert not repo.requeue_run(s, run_id)
            assert not repo.heartbeat(s, run_id, "w1")
    with db.session() as s:
        with pytest.raises(IllegalTransition, match=done):
            repo.retry_run(s, done)  # succeeded is final
        with pytest.raises(IllegalTransition, match="succeeded"):
            repo.request_cancel(s, done)
        assert repo.get_run(s, done).status is RunStatus.SUCCEEDED
        assert repo.get_run(s, cancelled).status is RunStatus.CANCELLED


def test_finish_needs_a_terminal_status(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    with db.session() as s, pytest.raises(ValueError):
        repo.finish_run(s, run_id, RunStatus.QUEUED)


def test_takeover_only_after_the_lease(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    assert _claim(db, run_id, "w1") is not None
    assert _claim(db, run_id, "w2", lease=60) is None  # fresh heartbeat: w1 still holds it
    with db.session() as s:
        assert repo.stale_runs(s, lease_seconds=60) == []
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    with db.session() as s:
        assert [r.id for r in repo.stale_runs(s, lease_seconds=60)] == [run_id]
    run = _claim(db, run_id, "w2", lease=60)
    assert run is not None and run.worker == "w2" and run.attempts == 2
    with db.session() as s:
        assert not repo.heartbeat(s, run_id, "w1")  # the old worker learns it lost the run
        assert not repo.finish_run(s, run_id, RunStatus.SUCCEEDED, worker="w1")
        assert [r.id for r in repo.runs_held_by(s, "w2")] == [run_id]


def test_cancel_semantics(db: Database) -> None:
    with db.session() as s:
        queued = make_run(s, label="q").id
        running = make_run(s, label="r").id
    assert _claim(db, running) is not None
    with db.session() as s:
        assert repo.request_cancel(s, queued) is RunStatus.CANCELLED
        assert repo.request_cancel(s, running) is RunStatus.RUNNING
        assert repo.request_cancel(s, running) is RunStatus.RUNNING  # asking twice is harmless
    with db.session() as s:
        assert repo.get_run(s, queued).status is RunStatus.CANCELLED
        run = repo.get_run(s, running)
        assert run.status is RunStatus.RUNNING and run.cancel_requested
        assert repo.finish_run(s, running, RunStatus.CANCELLED, worker="w1")
    with db.session() as s:
        assert repo.get_run(s, running).status is RunStatus.CANCELLED
        with pytest.raises(IllegalTransition):
            repo.request_cancel(s, running)


def test_retry_resets_a_failed_or_cancelled_run(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s).id
    assert _claim(db, run_id) is not None
    with db.session() as s:
        assert repo.request_cancel(s, run_id) is RunStatus.RUNNING
        assert repo.finish_run(s, run_id, RunStatus.FAILED, error="boom", traceback="tb")
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
    assert _claim(db, run_id) is not None
    with db.session() as s, pytest.raises(IllegalTransition, match="running"):
        repo.retry_run(s, run_id)


def test_fail_and_requeue(db: Database) -> None:
    with db.session() as s:
        blocked = make_run(s, label="blocked").id
        handed = make_run(s, label="handed").id
        assert repo.fail_run(s, blocked, "dependency failed")
        assert not repo.requeue_run(s, handed)  # queued: nothing to hand back
    assert _claim(db, handed) is not None
    with db.session() as s:
        assert not repo.requeue_run(s, handed, worker="other")
        assert repo.requeue_run(s, handed, worker="w1")
    with db.session() as s:
        run = repo.get_run(s, handed)
        assert (run.status, run.worker, run.enqueued_at, run.attempts) == (RunStatus.QUEUED, None, None, 0)
        assert repo.get_run(s, blocked).error == "dependency failed"


def test_missing_ids_raise_not_found(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(NotFound, match="r-nope"):
            repo.get_run(s, "r-nope")
        with pytest.raises(NotFound, match="s-nope"):
            repo.get_sweep(s, "s-nope")
        with pytest.raises(NotFound):
            repo.retry_run(s, "r-nope")
        with pytest.raises(NotFound):
            repo.request_cancel(s, "r-nope")
        with pytest.raises(NotFound):
            repo.mark_enqueued(s, "r-nope")
        assert repo.claim_run(s, "r-nope", worker="w", device="cpu", lease_seconds=1) is None


def test_reaper_requeue_keeps_the_attempt_and_needs_a_stale_heartbeat(db: Database) -> None:
    with db.session() as s:
        run_id = make_run(s, label="lost").id
    assert _claim(db, run_id) is not None
    with db.session() as s:
        assert not repo.requeue_run(s, run_id, lost_after_seconds=60)  # heartbeat is fresh: still alive
        assert repo.requeue_run(s, run_id, lost_after_seconds=0)  # stale at once: taken back
    with db.session() as s:
        run = repo.get_run(s, run_id)
        assert (run.status, run.attempts) == (RunStatus.QUEUED, 1)  # the loss counts towards the cap
