"""`orchestrator cancel` and `retry` on a real running training, and `orchestrator workers`."""

from __future__ import annotations

import pytest

from tests.integration.harness import Stack, run_state, wait_for
from tests.integration.test_recovery import submit_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cancel_stops_at_the_epoch_boundary_and_retry_resumes(server_stack: Stack) -> None:
    run_id = submit_training(server_stack, "--set", "epochs=6")
    server_stack.start_worker("w1")
    db = server_stack.db()
    wait_for(
        lambda: run_state(db, run_id)["status"] == "running",
        timeout=180,
        what="the run to start",
        on_timeout=lambda: server_stack.log_of("w1"),
    )

    workers = server_stack.orchestrator("workers", check=True).stdout
    assert "w1@test" in workers and run_id in workers  # live worker and what it runs

    cancelled = server_stack.orchestrator("cancel", run_id)
    assert cancelled.returncode == 0 and "will stop at the end of its current epoch" in cancelled.stdout
    state = wait_for(
        lambda: run_state(db, run_id)["status"] == "cancelled" and run_state(db, run_id),
        timeout=180,
        what="the run to be cancelled",
        on_timeout=lambda: server_stack.log_of("w1"),
    )
    done_before = state["epochs"]
    assert 1 <= len(done_before) < 6

    again = server_stack.orchestrator("cancel", run_id)
    assert again.returncode == 2 and run_id in again.stderr  # cancelling a cancelled run makes no sense

    retried = server_stack.orchestrator("retry", run_id)
    assert retried.returncode == 0, retried.stderr
    state = wait_for(
        lambda: run_state(db, run_id)["status"] == "succeeded" and run_state(db, run_id),
        timeout=240,
        what="the retried run to succeed",
        on_timeout=lambda: server_stack.log_of("w1"),
    )
    assert state["epochs"] == [1, 2, 3, 4, 5, 6]  # resumed from its checkpoint: every epoch once

    not_again = server_stack.orchestrator("retry", run_id)
    assert not_again.returncode == 2 and "only failed or cancelled runs can be retried" in not_again.stderr
