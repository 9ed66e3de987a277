"""Warm task processes on real workers (embedded default and Redis + PostgreSQL): reuse, isolation, recycling.

Which process ran an attempt, and as its how-many-th task, is what the attempt recorded itself
(``environment.pid``, ``environment.task_in_process``); why a process was replaced is the worker's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tarfile
from pathlib import Path

import pytest

from tests.integration.harness import Stack, process_alive, run_detail, run_state, submit_one_run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(params=["embedded", "server"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")


def environment(stack: Stack, run_id: str) -> dict:
    from storage import repository as repo

    with stack.db().session(readonly=True) as s:
        return dict(repo.get_run(s, run_id).environment or {})


def ended(stack: Stack, run_id: str, worker: str = "w1", timeout: float = 240) -> dict:
    """The run's end state, once its task is over too (its process reset for the next task or recycled):
    a run submitted before that could also be sent by the ending task's dispatch, and the second message
    would be one more (no-op) task of the process."""
    state = wait_for(
        lambda: (lambda st: st if st["status"] in TERMINAL else None)(run_state(stack.db(), run_id)),
        timeout=timeout,
        what=f"{run_id} to end",
        on_timeout=lambda: stack.log_of(worker),
    )
    pid = environment(stack, run_id).get("pid")
    if pid is not None:
        done = rf"task process {pid}: task \d+ \({run_id}\) ended"
        wait_for(
            lambda: re.search(done, full_log(stack, worker)),
            timeout=60,
            what=f"{run_id}'s task to end",
            on_timeout=lambda: stack.log_of(worker),
        )
    return state


def full_log(stack: Stack, worker: str = "w1") -> str:
    """The worker's whole log (``Stack.log_of`` keeps only its end)."""
    return (stack.home / f"{worker}.log").read_text(errors="replace")


def metrics(stack: Stack, run_id: str) -> list[dict]:
    """The run's per-epoch metrics, without the timings (which differ by design)."""
    keys = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy")
    return [{k: h.get(k) for k in keys} for h in run_detail(stack, run_id)["history"]]


# The pool is the same whatever the broker: each property on one stack, the two stacks both covered
# (each of these tests trains several runs; the suite's time is CI's budget).
@pytest.mark.parametrize("stack", ["server"], indirect=True)
def test_a_reused_process_trains_like_a_fresh_one_and_is_recycled_after_n_tasks(stack: Stack) -> None:
    stack.env["CONVLAB_TASKS_PER_PROCESS"] = "3"
    same = ("train", "--regime", "scratch", "--set", "epochs=2")
    # The first two queued before the worker starts, so no reaper is there yet to send a second message
    # for a run that submit is sending (a no-op task that would count as one of the three).
    first = submit_one_run(stack, *same)
    # A different model in between (the ImageNet base, other shapes of state), then the first training
    # again (--force: not reused from the database; submitted once the first ended, or it would join it).
    other = submit_one_run(stack, "train", "--regime", "imagenet")
    stack.start_worker("w1")
    assert ended(stack, first)["status"] == "succeeded"
    again = submit_one_run(stack, *same, "--force")
    for run_id in (other, again):
        assert ended(stack, run_id)["status"] == "succeeded"

    envs = [environment(stack, r) for r in (first, other, again)]
    assert len({e["pid"] for e in envs}) == 1, envs  # one process ran all three
    assert [e["task_in_process"] for e in envs] == [1, 2, 3]
    pid = envs[0]["pid"]
    log = full_log(stack)
    assert len(re.findall(rf"task process {pid} imported Keras", log)) == 1, log  # imported once, at start

    # The third task in a reused process: the same per-epoch metrics, to the last digit.
    assert metrics(stack, again) == metrics(stack, first)
    assert len(metrics(stack, first)) == 2

    # Three tasks (CONVLAB_TASKS_PER_PROCESS=3): the process was replaced, and said why.
    assert f"task process {pid} recycled after 3 tasks: it ran 3 tasks (CONVLAB_TASKS_PER_PROCESS)" in log
    fourth = submit_one_run(stack, "train", "--regime", "scratch")
    assert ended(stack, fourth)["status"] == "succeeded"
    new_pid = environment(stack, fourth)["pid"]
    assert new_pid != pid and not process_alive(pid)
    assert len(re.findall(rf"task process {new_pid} imported Keras", full_log(stack))) == 1


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_a_failed_task_recycles_its_process(stack: Stack, tmp_path: Path) -> None:
    source, tarball = stack.env["CONVLAB_CIFAR10"], tmp_path / "cifar.tar.gz"
    # A tar archive, as submit and the worker check at their start, holding no CIFAR-10 batch: the task's
    # data load fails.
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(__file__, arcname="readme.txt")
    stack.env["CONVLAB_CIFAR10"] = str(tarball)
    failing = submit_one_run(stack, "train", "--regime", "scratch")
    stack.start_worker("w1")
    state = ended(stack, failing)
    assert state["status"] == "failed", state
    pid = environment(stack, failing)["pid"]
    wait_for(
        lambda: f"task process {pid} recycled after 1 tasks: the task ended failed" in full_log(stack),
        timeout=30,
        what="the recycle after the failure",
        on_timeout=lambda: stack.log_of("w1"),
    )
    shutil.copy(source, tarball)  # the data is back: the next training succeeds
    fine = submit_one_run(stack, "train", "--regime", "scratch", "--set", "lr=0.002")
    assert ended(stack, fine)["status"] == "succeeded"
    env = environment(stack, fine)
    assert env["pid"] != pid and env["task_in_process"] == 1  # a new process, from its first task


# How the process dies, and how its message comes back (Redis's visibility vs the embedded broker's
# reaper), crossed once each way rather than four times.
@pytest.mark.parametrize(
    ("stack", "sig"),
    [("server", signal.SIGKILL), ("embedded", signal.SIGSEGV)],
    ids=["server-sigkill", "embedded-segfault"],
    indirect=["stack"],
)
def test_a_reused_process_that_dies_takes_down_only_itself_and_the_run_is_recovered(
    stack: Stack, sig: signal.Signals
) -> None:
    w1 = stack.start_worker("w1")
    warmup = submit_one_run(stack, "train", "--regime", "scratch")
    assert ended(stack, warmup)["status"] == "succeeded"
    # 12 epochs: trained on the warmup's kept compiled model, an epoch takes about half a second here,
    # and the kill must land after the first and before the last.
    run_id = submit_one_run(stack, "train", "--regime", "scratch", "--set", "epochs=12")
    db = stack.db()
    wait_for(
        lambda: run_state(db, run_id)["last_epoch"] >= 1,
        timeout=180,
        what="epoch 1",
        on_timeout=lambda: stack.log_of("w1"),
    )
    env = environment(stack, run_id)
    assert env["task_in_process"] == 2 and env["pid"] == environment(stack, warmup)["pid"]  # a reused one
    os.kill(env["pid"], sig)  # a crash of the task process alone (segfault, OOM kill)
    state = ended(stack, run_id)
    assert state["status"] == "succeeded", state["error"]
    assert state["attempts"] == 2  # recovered by the lease, resumed from its checkpoint
    assert state["epochs"] == list(range(1, 13))
    assert w1.poll() is None  # the worker itself lives on
    after = environment(stack, run_id)
    # A new process: the recovered attempt is its first task, or its second where the message that came
    # back (Celery re-queues it when the process dies) arrived before the lease had expired: that claim
    # was refused ("not started", a clean end that keeps the process), and the reaper sent it again.
    assert after["pid"] != env["pid"] and after["task_in_process"] in (1, 2)
