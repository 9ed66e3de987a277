"""Every transition of one attempt (worker.attempt), on the real storage (SQLite and PostgreSQL), with
stub bodies instead of trainings: no Celery, no Keras, no broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from contract.settings import Settings, load_settings
from storage import repository as repo
from storage.db import Database
from storage.models import ArtifactKind, Run, RunKind, RunStatus, new_id, utcnow
from worker.attempt import End, Outcome, run_attempt
from worker.context import RunContext, StopReason


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # A long heartbeat interval: the stub bodies end long before a beat, so nothing races the test.
    return load_settings(
        {"CONVLAB_HOME": str(tmp_path), "CONVLAB_DATABASE_URL": db_url, "CONVLAB_HEARTBEAT_SECONDS": "60"}
    )


def _run(db: Database, kind: RunKind = RunKind.TRAIN, depends_on: tuple[str, ...] = (), **kw: object) -> str:
    with db.session() as s:
        return repo.create_run(
            s,
            sweep_id=None,
            kind=kind,
            label=str(kind),
            spec={},
            spec_hash=new_id("h"),  # distinct work: one identity is executed by one live run at a time
            seed=0,
            depends_on=depends_on,
            **kw,
        ).id  # type: ignore[arg-type]


def _attempt(db: Database, settings: Settings, run_id: str, body=lambda ctx: None, **kw: object) -> Outcome:  # type: ignore[no-untyped-def]
    kind = kw.pop("kind", RunKind.REPORT)  # a report needs no Keras to describe its device
    return run_attempt(db, settings, run_id, kind, "w1", body, **kw)  # type: ignore[arg-type]


def _status(db: Database, run_id: str) -> Run:
    with db.session(readonly=True) as s:
        return repo.get_run(s, run_id)


def test_a_body_that_returns_succeeds_and_then_publishes(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)
    seen: list[tuple[str, int]] = []
    published: list[RunStatus] = []

    def body(ctx: RunContext) -> None:
        seen.append((ctx.run_id, ctx.fence))
        ctx.save_bytes("out.txt", b"result", ArtifactKind.LOG)

    outcome = _attempt(
        db, settings, run_id, body, after_success=lambda ctx: published.append(_status(db, run_id).status)
    )
    assert outcome.end == End.SUCCEEDED
    assert seen == [(run_id, 1)] and published == [RunStatus.SUCCEEDED]  # published after the success
    run = _status(db, run_id)
    assert (run.status, run.attempts, run.environment["pid"] > 0) == (RunStatus.SUCCEEDED, 1, True)  # type: ignore[index]
    with db.session(readonly=True) as s:
        assert [a.path for a in repo.artifacts_of(s, run_id)] == [f"runs/{run_id}/attempt-1/out.txt"]


def test_nothing_to_do_for_an_unknown_or_finished_run(db: Database, settings: Settings) -> None:
    assert _attempt(db, settings, "r-nope").end == End.NOT_STARTED
    run_id = _run(db, RunKind.REPORT)
    assert _attempt(db, settings, run_id).end == End.SUCCEEDED
    called: list[str] = []
    again = _attempt(db, settings, run_id, lambda ctx: called.append("ran"))
    assert (again.end, called, _status(db, run_id).attempts) == (End.NOT_STARTED, [], 1)
    assert "already succeeded" in again.message


def test_dependencies_gate_the_start(db: Database, settings: Settings) -> None:
    train = _run(db)
    vis = _run(db, RunKind.VISUALIZE, depends_on=(train,))
    report = _run(db, RunKind.REPORT, depends_on=(train, vis))
    with db.session() as s:
        repo.mark_enqueued(s, vis)
    waiting = _attempt(db, settings, vis, kind=RunKind.VISUALIZE)
    assert waiting.end == End.NOT_STARTED and f"waiting for {train}" in waiting.message
    assert _status(db, vis).enqueued_at is None  # its message is forgotten: it is sent again later
    with db.session() as s:
        repo.fail_run(s, train, "out of memory")
    blocked = _attempt(db, settings, vis, kind=RunKind.VISUALIZE)
    assert blocked.end == End.NOT_STARTED and _status(db, vis).status == RunStatus.FAILED
    assert f"dependency {train}" in (_status(db, vis).error or "")
    # A report waits for its dependencies to end, not to succeed: it runs on a partial sweep.
    assert _attempt(db, settings, report).end == End.SUCCEEDED


def test_a_body_that_raises_fails_the_run_and_what_depends_on_it(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)
    dependent = _run(db, RunKind.VISUALIZE, depends_on=(run_id,))

    def boom(ctx: RunContext) -> None:
        raise ValueError("boom")

    assert _attempt(db, settings, run_id, boom).end == End.FAILED
    run = _status(db, run_id)
    assert (
        run.status == RunStatus.FAILED and run.error == "ValueError: boom" and "boom" in (run.traceback or "")
    )
    assert _status(db, dependent).status == RunStatus.FAILED


@pytest.mark.parametrize(
    ("reason", "end", "status", "attempts"),
    [
        (StopReason.CANCELLED, End.CANCELLED, RunStatus.CANCELLED, 1),
        (StopReason.SHUTDOWN, End.HANDED_BACK, RunStatus.QUEUED, 0),  # a hand-back refunds the attempt
    ],
)
def test_a_body_that_was_told_to_stop(
    db: Database, settings: Settings, reason: str, end: End, status: RunStatus, attempts: int
) -> None:
    run_id = _run(db, RunKind.REPORT)
    published: list[str] = []

    def stops(ctx: RunContext) -> None:
        ctx.stopped_because = reason  # what ctx.should_stop() records when it says stop

    outcome = _attempt(db, settings, run_id, stops, after_success=lambda ctx: published.append("no"))
    run = _status(db, run_id)
    assert (outcome.end, run.status, run.attempts, published) == (end, status, attempts, [])


def test_a_cancel_seen_by_should_stop_cancels(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)

    def cancelled_meanwhile(ctx: RunContext) -> None:
        with db.session() as s:
            assert repo.request_cancel(s, run_id, lease_seconds=60) == RunStatus.RUNNING
        ctx.heartbeat.beat()  # the next heartbeat learns it
        assert ctx.should_stop()

    assert _attempt(db, settings, run_id, cancelled_meanwhile).end == End.CANCELLED
    assert _status(db, run_id).status == RunStatus.CANCELLED


def test_an_attempt_that_lost_the_run_writes_nothing_more(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)

    def taken_over(ctx: RunContext) -> None:
        with db.session() as s:  # paused past the lease; another worker claims the run
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        with db.session() as s:
            assert repo.claim_run(s, run_id, worker="w2", device="cpu", lease_seconds=60) is not None
        ctx.save_bytes("late.txt", b"from the old attempt", ArtifactKind.LOG)  # refused

    outcome = _attempt(db, settings, run_id, taken_over, after_success=lambda ctx: pytest.fail("published"))
    run = _status(db, run_id)
    assert (outcome.end, run.status, run.worker, run.fence) == (End.LOST, RunStatus.RUNNING, "w2", 2)
    with db.session(readonly=True) as s:
        assert repo.artifacts_of(s, run_id) == []


def test_an_attempt_that_loses_the_database_leaves_the_run_to_the_lease(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A database that drops the session mid-attempt (a restart, a failover) is not the work's failure:
    the run is not failed; it stays running with no heartbeat, and the lease gives it to a next attempt."""
    import sqlalchemy as sa

    run_id = _run(db, RunKind.REPORT)
    unreachable = sa.create_engine(f"sqlite:///{tmp_path}/no/such/folder/db.sqlite")

    def database_gone(ctx: RunContext) -> None:
        with unreachable.connect():  # a real driver error: the database cannot be opened
            pass

    outcome = _attempt(
        db, settings, run_id, database_gone, after_success=lambda ctx: pytest.fail("published")
    )
    run = _status(db, run_id)
    assert (outcome.end, run.status, run.error) == (End.LEFT_TO_LEASE, RunStatus.RUNNING, None)
    with db.session() as s:  # past the lease, the reaper re-queues it and the next attempt runs it
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    with db.session() as s:
        assert repo.requeue_stale_run(s, run_id, lease_seconds=60)
    assert _attempt(db, settings, run_id).end == End.SUCCEEDED


def test_a_failure_after_the_run_was_lost_is_not_recorded(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)

    def lost_then_crashed(ctx: RunContext) -> None:
        with db.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        with db.session() as s:
            repo.claim_run(s, run_id, worker="w2", device="cpu", lease_seconds=60)
        raise OSError("disk went away")

    assert _attempt(db, settings, run_id, lost_then_crashed).end == End.LOST
    assert _status(db, run_id).status == RunStatus.RUNNING and _status(db, run_id).error is None


def test_the_attempt_cap_fails_the_run(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT, max_attempts=1)
    with db.session() as s:  # the first attempt's worker died
        repo.claim_run(s, run_id, worker="w0", device="cpu", lease_seconds=60)
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    called: list[str] = []
    outcome = _attempt(db, settings, run_id, lambda ctx: called.append("ran"))
    run = _status(db, run_id)
    assert (outcome.end, run.status, called) == (End.FAILED, RunStatus.FAILED, [])
    assert "gave up after 1 attempts" in (run.error or "")


def test_a_run_whose_cancel_was_requested_is_not_claimed_again(db: Database, settings: Settings) -> None:
    run_id = _run(db, RunKind.REPORT)
    with db.session() as s:
        repo.claim_run(s, run_id, worker="w0", device="cpu", lease_seconds=60)
        repo.request_cancel(s, run_id, lease_seconds=60)
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert _attempt(db, settings, run_id, lambda ctx: pytest.fail("ran")).end == End.NOT_STARTED
