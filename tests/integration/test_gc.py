"""Lost attempts' files, with real worker processes on Redis and PostgreSQL: SIGKILLs of the whole worker
mid-save (a partial ``.model-e*.tmp.keras`` left behind) and right after a checkpoint's commit (before the
older pair is removed), then ``orchestrator gc``: only the files the database references remain, and
``orchestrator check`` passes."""

from __future__ import annotations

import signal
import time

import pytest

from storage import repository as repo
from storage.folder_store import FolderStore
from tests.integration.harness import Stack, kill_worker, run_state, wait_for
from tests.integration.test_recovery import submit_training, wait_until_ended

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 8
KILLS = 4  # alternately mid-save and right after a commit


def _live_attempt(stack: Stack, run_id: str, worker: str) -> tuple[int, int] | None:
    """(fence, last epoch) once ``worker`` holds the run."""
    with stack.db().session(readonly=True) as s:
        run = repo.get_run(s, run_id)
        if str(run.status) == "running" and run.worker == f"{worker}@test":
            return run.fence, run.last_epoch
    return None


def _kill_mid_save_or_after_commit(stack: Stack, run_id: str, worker: str, mid_save: bool) -> str:
    """Start ``worker``, wait for its attempt to save (a temporary model file appears) or to commit an
    epoch, SIGKILL it there; return what happened."""
    proc = stack.start_worker(worker)
    fence, start_epoch = wait_for(
        lambda: _live_attempt(stack, run_id, worker),
        timeout=300,
        what=f"{worker} to claim the run",
        on_timeout=lambda: stack.log_of(worker),
    )
    store = FolderStore(stack.settings.artifacts_dir)
    folder = store.absolute(f"{store.attempt_dir(run_id, fence)}/checkpoint")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if mid_save and folder.is_dir() and any(folder.glob(".model-e*.tmp.keras")):
            kill_worker(proc, signal.SIGKILL)
            return "mid-save"
        if not mid_save and run_state(stack.db(), run_id)["last_epoch"] > start_epoch:
            kill_worker(proc, signal.SIGKILL)
            return "after-commit"
        time.sleep(0.02 if mid_save else 0.05)
    raise AssertionError(f"{worker} neither saved nor committed in time\n{stack.log_of(worker)}")


def test_sigkills_around_checkpoint_commits_then_gc_leaves_only_referenced_files(server_stack: Stack) -> None:
    server_stack.env["CONVLAB_MAX_ATTEMPTS"] = str(KILLS + 2)
    run_id = submit_training(server_stack, "--set", f"epochs={EPOCHS}")
    events = [_kill_mid_save_or_after_commit(server_stack, run_id, f"w{i}", i % 2 == 0) for i in range(KILLS)]
    assert "mid-save" in events, events
    server_stack.start_worker("last")
    state = wait_until_ended(server_stack, run_id, "last", timeout=600)
    assert state["status"] == "succeeded", state["error"]
    assert state["epochs"] == list(range(1, EPOCHS + 1))

    store = FolderStore(server_stack.settings.artifacts_dir)
    listed = {f.path for f in store.list_files(store.run_dir(run_id))}
    referenced = set(state["artifacts"])
    assert referenced <= listed
    leftovers = listed - referenced
    assert leftovers, "the kills left nothing behind: the test did not exercise gc"

    checked = server_stack.orchestrator("check", run_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # a warning, not a failure
    assert f"warning: {len(leftovers)} unreferenced file(s)" in checked.stdout

    dry = server_stack.orchestrator("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would free {len(leftovers)} file(s)" in dry.stdout
    assert {f.path for f in store.list_files(store.run_dir(run_id))} == listed  # nothing removed

    collected = server_stack.orchestrator("gc")
    assert collected.returncode == 0, collected.stderr
    assert f"freed {len(leftovers)} file(s)" in collected.stdout
    assert {f.path for f in store.list_files(store.run_dir(run_id))} == referenced
    checked = server_stack.orchestrator("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "unreferenced" not in checked.stdout
    print(f"\nkills: {events}; gc removed {len(leftovers)} file(s): {sorted(leftovers)}")
