"""Faults that break "exactly one attempt's effects" unless storage fences every write, on real worker
processes against the real Redis + PostgreSQL and the embedded default (SQLite + filesystem broker).

Each test asserts the end state a user relies on: the run's status, one epoch row per epoch holding the
values of the checkpoint the run stands on, every artifact intact (`orchestrator check` exits 0), and no
run left queued or running. Synchronisation is on database state with deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.harness import (
    ROOT,
    Stack,
    kill_worker,
    pool_processes,
    process_alive,
    run_detail,
    run_state,
    submit_one_run,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(params=["server", "embedded", "s3"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Every chaos test runs on Redis + PostgreSQL, on the embedded default, and on Redis + PostgreSQL
    with the artifacts in an S3 server (several hosts' set-up)."""
    return request.getfixturevalue(f"{request.param}_stack")


def task_pid(stack: Stack, run_id: str) -> int | None:
    """The task process executing the run's current attempt, as it recorded itself."""
    from storage import repository as repo

    with stack.db().session(readonly=True) as s:
        environment = repo.get_run(s, run_id).environment or {}
    return environment.get("pid")


def ended(stack: Stack, run_id: str, *logs: str, timeout: float = 240) -> dict:
    return wait_for(
        lambda: (lambda st: st if st["status"] in TERMINAL else None)(run_state(stack.db(), run_id)),
        timeout=timeout,
        what=f"{run_id} to end",
        on_timeout=lambda: "".join(stack.log_of(w) for w in logs),
    )


def assert_intact(stack: Stack, run_id: str, epochs: int) -> None:
    state = run_state(stack.db(), run_id)
    assert state["status"] == "succeeded", state
    assert state["epochs"] == list(range(1, epochs + 1))  # each epoch stored once
    check = stack.orchestrator("check", run_id)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all intact" in check.stdout


@pytest.mark.parametrize("taker", ["other-worker", "sibling-slot"])
def test_a_paused_attempt_cannot_touch_the_run_another_attempt_finished(stack: Stack, taker: str) -> None:
    run_id = submit_one_run(stack, "train", "--regime", "imagenet", "--set", "epochs=4")
    stack.start_worker("w1", *(["--slots", "2"] if taker == "sibling-slot" else []))
    db = stack.db()
    wait_for(
        lambda: run_state(db, run_id)["last_epoch"] >= 1 and task_pid(stack, run_id),
        timeout=180,
        what="epoch 1",
        on_timeout=lambda: stack.log_of("w1"),
    )
    paused = task_pid(stack, run_id)
    assert paused is not None
    os.kill(paused, signal.SIGSTOP)  # a long GC pause, a partition from the database ...
    try:
        if taker == "other-worker":
            stack.start_worker("w2")
        # ... past the lease: the reaper re-queues the run and a second attempt claims it (with
        # "sibling-slot", the worker's other task process, under the same worker name).
        wait_for(
            lambda: (lambda st: st["attempts"] == 2 and st["status"] == "running")(run_state(db, run_id)),
            timeout=120,
            what="a second attempt to take the run over",
            on_timeout=lambda: stack.log_of("w1") + stack.log_of("w2"),
        )
    finally:
        # The paused attempt wakes while the new one trains: both would now write the same run.
        os.kill(paused, signal.SIGCONT)
    wait_for(lambda: not process_alive(paused), timeout=120, what="the woken attempt to stop")
    state = ended(stack, run_id, "w1", "w2")
    assert state["status"] == "succeeded", state["error"]
    assert state["attempts"] == 2
    after = run_detail(stack, run_id)
    assert after["artifacts"] and all("/attempt-2/" in a["path"] for a in after["artifacts"])
    # Epoch rows equal the final checkpoint's history (the woken attempt overwrote none), every file
    # is intact (it deleted none).
    assert_intact(stack, run_id, epochs=4)
    assert "lost the run; stopped without writing" in stack.log_of("w1")


def test_a_message_taken_by_a_worker_that_dies_before_claiming_is_sent_again(stack: Stack) -> None:
    from storage import repository as repo

    w1 = stack.start_worker("w1")
    db = stack.db()
    wait_for(
        lambda: pool_processes(w1.pid), timeout=60, what="w1's pool", on_timeout=lambda: stack.log_of("w1")
    )
    wait_for(
        lambda: "ready" in stack.log_of("w1"),
        timeout=60,
        what="w1 ready",
        on_timeout=lambda: stack.log_of("w1"),
    )
    for pid in pool_processes(w1.pid):
        os.kill(pid, signal.SIGSTOP)  # the task process cannot start the run: the message sits in w1
    run_id = submit_one_run(stack, "train", "--regime", "scratch")

    def received() -> bool:
        with db.session(readonly=True) as s:
            return repo.get_run(s, run_id).received_by == "w1@test"

    wait_for(received, timeout=60, what="w1 to take the message", on_timeout=lambda: stack.log_of("w1"))
    kill_worker(w1, signal.SIGKILL)  # the whole worker dies with the message, before any claim
    died = time.monotonic()
    stack.start_worker("w2")
    state = ended(stack, run_id, "w2")
    print(f"\nmessage lost with its worker -> run ended {time.monotonic() - died:.1f} s later (lease 4 s)")
    assert state["status"] == "succeeded", state["error"]
    assert state["attempts"] == 1  # w1 never claimed it
    assert_intact(stack, run_id, epochs=1)


def test_a_suspended_report_blocks_no_training(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_id = submit_one_run(stack, "train", "--regime", "scratch", "--set", "epochs=4")
    stack.start_worker("w1")
    db = stack.db()
    wait_for(
        lambda: run_state(db, run_id)["last_epoch"] >= 1,
        timeout=180,
        what="epoch 1",
        on_timeout=lambda: stack.log_of("w1"),
    )
    out = tmp_path / "report-out"
    reader = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "report", "--out", str(out)],
        env=stack.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Suspend it in the middle of drawing (its first figure is written), like Ctrl-Z in a terminal.
        wait_for(lambda: out.is_dir() and any(out.iterdir()), timeout=120, what="the report to start drawing")
        os.kill(reader.pid, signal.SIGSTOP)
        stopped_at = run_state(db, run_id)["last_epoch"]
        # Writers go on: SQLite's busy timeout is 30 s, so a reader holding the write lock fails this.
        wait_for(
            lambda: (
                run_state(db, run_id)["last_epoch"] > stopped_at
                or run_state(db, run_id)["status"] in TERMINAL
            ),
            timeout=25,
            what="an epoch to be recorded while the report is suspended",
            on_timeout=lambda: stack.log_of("w1"),
        )
        state = ended(stack, run_id, "w1")
    finally:
        os.kill(reader.pid, signal.SIGCONT)
    output, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, output
    assert state["status"] == "succeeded", state["error"]
    assert_intact(stack, run_id, epochs=4)


def test_cancelling_a_running_visualization_stops_it(stack: Stack) -> None:
    run_id = submit_one_run(
        stack, "visualize", "--image", "random", "--source", "none", "--set", "vis_steps=10000"
    )
    stack.start_worker("w1")
    db = stack.db()
    wait_for(
        lambda: run_state(db, run_id)["status"] == "running" and task_pid(stack, run_id),
        timeout=180,
        what="the visualization to run",
        on_timeout=lambda: stack.log_of("w1"),
    )
    pid = task_pid(stack, run_id)
    assert pid is not None
    cancel = stack.orchestrator("cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    state = ended(stack, run_id, "w1", timeout=60)  # one heartbeat (1 s here), not 10,000 steps
    assert state["status"] == "cancelled", state
    wait_for(lambda: not process_alive(pid), timeout=60, what="its task process to end")
    assert run_state(db, run_id)["status"] == "cancelled"
    assert stack.orchestrator("check", run_id).returncode == 0
