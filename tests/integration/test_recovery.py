"""Crash safety with real worker processes on the real Redis and PostgreSQL (no eager mode, no mocks)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.integration.harness import Stack, kill_worker, run_state, submit_one_run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


def submit_training(stack: Stack, *extra: str, regime: str = "imagenet") -> str:
    return submit_one_run(stack, "train", "--regime", regime, *extra)


def wait_until_ended(stack: Stack, run_id: str, *workers: str, timeout: float = 240) -> dict:
    """The run's final state; on timeout, the named workers' logs explain why."""

    def ended() -> dict | None:
        state = run_state(stack.db(), run_id)
        return state if state["status"] in TERMINAL else None

    return wait_for(
        ended,
        timeout=timeout,
        what=f"{run_id} to end",
        on_timeout=lambda: "".join(stack.log_of(w) for w in workers),
    )


def test_training_succeeds_with_metrics_device_and_artifacts(server_stack: Stack) -> None:
    run_id = submit_training(server_stack, regime="finetune")
    server_stack.start_worker("w1")
    state = wait_until_ended(server_stack, run_id, "w1")
    assert state["status"] == "succeeded", state["error"]
    assert state["epochs"] == [1, 2]  # smoke finetune: one head epoch, one tune epoch, numbered on
    assert any(p.endswith("checkpoint/model-e0002.keras") for p in state["artifacts"])
    assert any(p.endswith("checkpoint/state-e0002.json") for p in state["artifacts"])
    detail = json.loads(server_stack.orchestrator("status", run_id, "--json", check=True).stdout)
    assert detail["device"] and detail["worker"] == "w1@test"
    assert [h["phase"] for h in detail["history"]] == ["head", "tune"]


def test_sigkill_mid_training_resumes_on_another_worker(server_stack: Stack) -> None:
    run_id = submit_training(server_stack, "--set", "epochs=4")
    w1 = server_stack.start_worker("w1")
    db = server_stack.db()
    wait_for(
        lambda: run_state(db, run_id)["last_epoch"] >= 1,
        timeout=180,
        what="epoch 1",
        on_timeout=lambda: server_stack.log_of("w1"),
    )
    killed_at = time.monotonic()
    kill_worker(w1, signal.SIGKILL)  # the whole worker: main process and its task process
    server_stack.start_worker("w2")
    wait_for(
        lambda: run_state(db, run_id)["worker"] == "w2@test",
        timeout=120,
        what="w2 to take the run over",
        on_timeout=lambda: server_stack.log_of("w2"),
    )
    resumed_after = time.monotonic() - killed_at
    state = wait_until_ended(server_stack, run_id, "w2")
    assert state["status"] == "succeeded", state["error"]
    assert state["epochs"] == [1, 2, 3, 4]  # contiguous, each stored once
    assert state["attempts"] == 2
    print(f"\nSIGKILL -> resumed on w2 after {resumed_after:.1f} s (lease 4 s)")


def test_sigterm_hands_the_run_back_and_another_worker_finishes_it(server_stack: Stack) -> None:
    run_id = submit_training(server_stack, "--set", "epochs=4")
    w1 = server_stack.start_worker("w1")
    db = server_stack.db()
    wait_for(
        lambda: run_state(db, run_id)["last_epoch"] >= 1,
        timeout=180,
        what="epoch 1",
        on_timeout=lambda: server_stack.log_of("w1"),
    )
    kill_worker(w1, signal.SIGTERM)  # main process only, like `docker stop`
    w1.wait(timeout=120)
    state = run_state(db, run_id)
    assert state["status"] in ("queued", "succeeded"), state  # handed back (or it had just finished)
    server_stack.start_worker("w2")
    state = wait_until_ended(server_stack, run_id, "w1", "w2")
    assert state["status"] == "succeeded", state["error"]
    assert state["epochs"] == [1, 2, 3, 4]


def test_a_run_that_always_loses_its_worker_fails_after_the_cap(server_stack: Stack) -> None:
    server_stack.env["CONVLAB_MAX_ATTEMPTS"] = "2"
    run_id = submit_training(server_stack, "--set", "epochs=20")
    db = server_stack.db()
    for attempt in (1, 2):
        worker = server_stack.start_worker(f"w{attempt}")
        wait_for(
            lambda a=attempt: (
                run_state(db, run_id)["attempts"] == a and run_state(db, run_id)["status"] == "running"
            ),
            timeout=180,
            what=f"attempt {attempt}",
            on_timeout=lambda a=attempt: server_stack.log_of(f"w{a}"),
        )
        kill_worker(worker, signal.SIGKILL)
    server_stack.start_worker("w3")  # its reaper finds the stale run at the cap
    state = wait_until_ended(server_stack, run_id, "w3", timeout=120)
    assert state["status"] == "failed"
    assert "gave up after 2 attempts" in state["error"]


def test_redelivered_message_for_a_finished_run_does_nothing(server_stack: Stack) -> None:
    run_id = submit_training(server_stack)
    server_stack.start_worker("w1")
    state = wait_until_ended(server_stack, run_id, "w1")
    assert state["status"] == "succeeded"
    from contract.specs import TASK_TRAIN
    from worker.app import create_app

    create_app(server_stack.settings).send_task(TASK_TRAIN, args=[run_id], queue="convlab")
    wait_for(
        lambda: "already succeeded: nothing to do" in server_stack.log_of("w1"),
        timeout=60,
        what="the duplicate to be consumed",
        on_timeout=lambda: server_stack.log_of("w1"),
    )
    after = run_state(server_stack.db(), run_id)
    assert (after["status"], after["attempts"], after["epochs"]) == ("succeeded", 1, state["epochs"])
