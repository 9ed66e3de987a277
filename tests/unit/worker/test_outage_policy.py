"""What a task does when the database fails before its claim: the message is acknowledged only once the
database knows it is gone; while the database cannot be reached, it is given back to the broker after a
bounded wait. (The same with real processes and a real outage: tests/integration/test_outages.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.exceptions import Reject

from contract.settings import Settings, load_settings
from storage import repository as repo
from storage.db import Database, database_for_url
from storage.models import RunKind
from worker import attempt
from worker.attempt import NotClaimed, run_attempt

# Nothing listens on port 1: every connection is refused at once, as during a restart.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/convlab"


def _settings(tmp_path: Path, url: str, lease: str = "60") -> Settings:
    return load_settings(
        {"CONVLAB_HOME": str(tmp_path), "CONVLAB_DATABASE_URL": url, "CONVLAB_LEASE_SECONDS": lease}
    )


def test_a_claim_that_fails_with_the_database_reachable_forgets_the_message(
    db: Database, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.session() as s:
        run_id = repo.create_run(
            s, sweep_id=None, kind=RunKind.REPORT, label="r", spec={}, spec_hash="h", seed=0
        ).id
        repo.mark_enqueued(s, run_id)

    def broken(*_: object) -> None:
        raise RuntimeError("a bug before the claim")

    monkeypatch.setattr(attempt, "claim", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # acknowledged: the reaper sends the run again
        run_attempt(db, _settings(tmp_path, db_url), run_id, RunKind.REPORT, "w1", lambda ctx: None)
    with db.session(readonly=True) as s:
        assert [r.id for r in repo.ready_unenqueued_runs(s)] == [run_id]


def test_a_claim_the_database_cannot_hear_of_keeps_the_message(tmp_path: Path) -> None:
    db = database_for_url(UNREACHABLE, ensure_schema=False)
    with pytest.raises(NotClaimed, match="r-x not claimed: DatabaseUnavailable"):
        run_attempt(db, _settings(tmp_path, UNREACHABLE), "r-x", RunKind.REPORT, "w1", lambda ctx: None)


def test_the_task_gives_the_message_back_after_a_bounded_wait(tmp_path: Path) -> None:
    from worker.tasks import _attempt_through_outages

    started = time.monotonic()
    with pytest.raises(Reject) as rejected:
        _attempt_through_outages(_settings(tmp_path, UNREACHABLE, lease="2"), "r-x", RunKind.REPORT, "w1")
    waited = time.monotonic() - started
    assert rejected.value.requeue is True  # back to the broker, not acknowledged as done
    assert 1.0 <= waited < 10, waited  # tried again (0.5 s, 1 s) for about one lease, then gave it back
