"""worker.warm's decisions, in this process: when a task process may take the next task, and why not."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.settings import load_settings
from worker import warm


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    saved = warm._state
    warm._state = warm._ProcessState()
    yield
    warm._state = saved


def run_task(tmp_path: Path, end: str = "succeeded", **env: str) -> str | None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path), **env})
    with warm.TaskScope(settings, "r-test") as scope:
        scope.ended(end)
    return warm.recycle_reason()


def test_a_clean_task_leaves_the_process_for_the_next_and_counts(tmp_path: Path) -> None:
    assert run_task(tmp_path) is None
    assert run_task(tmp_path, "not started") is None
    assert warm.tasks_run() == 2


@pytest.mark.parametrize("end", ["failed", "cancelled", "lost", "handed back", "left to the lease"])
def test_a_task_that_did_not_end_cleanly_recycles(tmp_path: Path, end: str) -> None:
    assert run_task(tmp_path, end) == f"the task ended {end}"


def test_a_task_that_raised_recycles(tmp_path: Path) -> None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    with pytest.raises(RuntimeError), warm.TaskScope(settings, "r-test"):
        raise RuntimeError("boom")
    assert warm.recycle_reason() == "the task raised RuntimeError"


def test_after_n_tasks_the_process_is_recycled(tmp_path: Path) -> None:
    assert run_task(tmp_path, CONVLAB_TASKS_PER_PROCESS="2") is None
    assert run_task(tmp_path, CONVLAB_TASKS_PER_PROCESS="2") == "it ran 2 tasks (CONVLAB_TASKS_PER_PROCESS)"


def test_above_the_memory_mark_the_process_is_recycled(tmp_path: Path) -> None:
    reason = run_task(tmp_path, CONVLAB_PROCESS_MEMORY_MB="1")
    assert reason is not None and "(CONVLAB_PROCESS_MEMORY_MB)" in reason and "above 1 MB" in reason


def test_a_file_left_open_recycles(tmp_path: Path) -> None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    with warm.TaskScope(settings, "r-test") as scope:
        leaked = open(tmp_path / "leaked.txt", "w")  # noqa: SIM115 - the leak under test
        scope.ended("succeeded")
    try:
        reason = warm.recycle_reason()
        assert reason is not None and reason.startswith("the task left files open") and "leaked.txt" in reason
    finally:
        leaked.close()


def test_a_thread_left_running_recycles(tmp_path: Path) -> None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    stop = threading.Event()
    with warm.TaskScope(settings, "r-test") as scope:
        threading.Thread(target=stop.wait, name="left-behind", daemon=True).start()
        scope.ended("succeeded")
    stop.set()
    assert warm.recycle_reason() == "the task left threads running: left-behind"


def test_the_environment_and_folder_are_put_back_after_a_clean_task(tmp_path: Path) -> None:
    warm._state.environ = dict(os.environ)
    warm._state.cwd = os.getcwd()
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    with warm.TaskScope(settings, "r-test") as scope:
        os.environ["CONVLAB_TEST_LEAK"] = "1"
        os.chdir(tmp_path)
        scope.ended("succeeded")
    assert warm.recycle_reason() is None
    assert "CONVLAB_TEST_LEAK" not in os.environ and os.getcwd() == warm._state.cwd
