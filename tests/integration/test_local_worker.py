"""The local worker `submit` starts ends with that submit, even a SIGKILLed one; `retry` then resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.version import PACKAGES
from orchestrator.local_worker import _group_alive
from storage import repository as repo
from storage.models import RunKind, RunStatus
from tests.integration.harness import ROOT, Stack, process_alive, run_state, wait_for
from worker.owner import Owner

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _runs(stack: Stack) -> list[dict]:
    result = stack.orchestrator("status", "--json")
    return json.loads(result.stdout)["runs"] if result.returncode == 0 else []


def _logs(stack: Stack) -> str:
    return "".join(p.read_text(errors="replace")[-3000:] for p in (stack.home / "logs").glob("*.log"))


def test_a_sigkilled_submit_leaves_no_worker_behind_and_retry_finishes_its_sweep(
    embedded_stack: Stack,
) -> None:
    stack = embedded_stack
    submit = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "submit", "train", "--regime", "scratch"]
        + ["--profile", "smoke", "--set", "epochs=4"],
        env=stack.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = wait_for(
            lambda: next((r for r in _runs(stack) if r["status"] == "running" and r["epoch"] >= 1), None),
            timeout=240,
            what="the training to finish its first epoch",
            on_timeout=lambda: _logs(stack),
        )
        db = stack.db()
        with db.session() as s:
            worker = next(w for w in repo.live_workers(s, within_seconds=60) if w.name == run["worker"])
            worker_pid = worker.pid  # Celery's main process, leader of the worker's process group
        killed = time.monotonic()
        submit.send_signal(signal.SIGKILL)  # no clean-up of its own: the worker must go by itself
        submit.wait(timeout=10)
        wait_for(
            lambda: not _group_alive(worker_pid),
            timeout=20,
            what=f"every process of the local worker (group {worker_pid}) to end",
            on_timeout=lambda: _logs(stack),
        )
        gone_after = time.monotonic() - killed
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    print(f"\nlocal worker gone {gone_after:.2f} s after its submit was SIGKILLed")
    assert gone_after < 10

    # Left as after Ctrl-C: nothing running, the worker marked stopped, the sweep's runs cancelled.
    wait_for(
        lambda: run_state(db, run["id"])["status"] == "cancelled",
        timeout=10,
        what="the training to be handed back and cancelled",
        on_timeout=lambda: _logs(stack),
    )
    state = run_state(db, run["id"])
    assert state["worker"] is None and state["attempts"] == 0, state  # handed back, its attempt refunded
    with db.session(readonly=True) as s:
        assert repo.live_workers(s, within_seconds=3600) == []
    sweep_id = json.loads(stack.orchestrator("status", "--json", check=True).stdout)["sweep_id"]
    assert {r["status"] for r in _runs(stack)} == {"cancelled"}

    retried = stack.orchestrator("retry", sweep_id, timeout=600)
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    assert {r["status"] for r in _runs(stack)} == {"succeeded"}
    assert run_state(db, run["id"])["epochs"] == [1, 2, 3, 4]  # resumed from its checkpoint, once each
    assert "no live workers" in stack.orchestrator("workers", check=True).stdout


def test_the_maintenance_watch_stops_a_worker_whose_owner_is_gone_without_a_kernel_signal(
    embedded_stack: Stack,
) -> None:
    """The portable backstop alone: the owner is not the worker's parent, so no parent-death signal
    fires; the maintenance process notices the owner's pid is gone, kills its group, hands back."""
    stack = embedded_stack
    db = stack.db()
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="train", profile="smoke", overrides={}, code_version="t").id
        run_id = repo.create_run(
            s, sweep_id=sweep, kind=RunKind.TRAIN, label="t", spec={}, spec_hash="h", seed=0
        ).id
        queued_id = repo.create_run(
            s, sweep_id=sweep, kind=RunKind.TRAIN, label="q", spec={}, spec_hash="h2", seed=0
        ).id
        repo.upsert_worker(s, name="w@test", host="h", pid=os.getpid(), device="CPU", slots=1)
        assert repo.claim_run(s, run_id, worker="w@test", device="CPU", lease_seconds=60) is not None
    owner = subprocess.Popen(["sleep", "600"])
    env = dict(stack.env, **Owner(owner.pid, _start_of(owner.pid), sweep).to_env())
    # A stand-in for the worker's other processes, in the same group as the maintenance process.
    program = (
        "import os, subprocess, sys\n"
        "from contract.settings import load_settings\n"
        "from worker.maintenance import run_maintenance\n"
        "sibling = subprocess.Popen(['sleep', '600'])\n"
        "print(sibling.pid, flush=True)\n"
        "run_maintenance(load_settings(), 'w@test', os.getppid())\n"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-c", program],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its group is its own: killing "the worker's group" must not reach us
    )
    try:
        assert watcher.stdout is not None
        sibling = int(watcher.stdout.readline())
        time.sleep(1.0)
        assert watcher.poll() is None and process_alive(sibling)  # the owner lives: nothing happens
        owner.kill()
        owner.wait()
        watcher.wait(timeout=15)
        assert not process_alive(sibling)
    finally:
        for proc in (owner, watcher):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if watcher.poll() is not None and _group_alive(watcher.pid):
            os.killpg(watcher.pid, signal.SIGKILL)
    with db.session(readonly=True) as s:
        assert repo.get_run(s, run_id).status == RunStatus.CANCELLED
        assert repo.get_run(s, run_id).attempts == 0  # handed back first: the lost attempt does not count
        assert repo.get_run(s, queued_id).status == RunStatus.CANCELLED
        assert repo.live_workers(s, within_seconds=3600) == []


def _start_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


# ---------------------------------------------------------------- a worker of other code


def _tree(target: Path, comment: str) -> Path:
    """A copy of convlab's packages, as another checkout or install of it; ``comment`` changes its code."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    runners = target / "worker" / "runners.py"
    runners.write_text(runners.read_text() + f"\n# {comment}\n")
    return target


def _in(tree: Path, stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=dict(stack.env, PYTHONPATH=str(tree)),
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _worker_from(tree: Path, stack: Stack, name: str) -> subprocess.Popen[bytes]:
    log = open(stack.home / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "worker", "--name", f"{name}@test"],
        env=dict(stack.env, PYTHONPATH=str(tree)),
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.workers.append(proc)  # killed at the end of the test
    return proc


def test_a_worker_of_other_code_refuses_a_run_and_a_worker_of_its_code_runs_it(
    embedded_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = embedded_stack
    trees = tmp_path_factory.mktemp("trees")
    a, b = _tree(trees / "a", "tree A"), _tree(trees / "b", "tree B")
    print_version = (
        "from contract.version import code_identity, code_version; print(code_identity(), code_version())"
    )
    code_a = _in(a, stack, "-c", print_version).stdout.split()[0]
    code_b, version_b = _in(b, stack, "-c", print_version).stdout.split(maxsplit=1)
    assert code_a != code_b

    _worker_from(a, stack, "old")
    db = stack.db()
    wait_for(
        lambda: _live_codes(stack) == {code_a},
        timeout=120,
        what="worker A",
        on_timeout=lambda: stack.log_of("old"),
    )
    submitted = _in(
        b,
        stack,
        "-m",
        "orchestrator.cli",
        "submit",
        "train",
        "--regime",
        "scratch",
        "--profile",
        "smoke",
        "--no-wait",
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert f"no live worker runs this code ({code_b[:12]}; they run {code_a[:12]})" in submitted.stdout
    train = next(r for r in _runs(stack) if r["kind"] == "train")["id"]

    # Worker A takes the message, refuses the run, and leaves it queued and unsent: no loop.
    wait_for(
        lambda: "not claimed" in stack.log_of("old"),
        timeout=120,
        what="worker A to refuse the run",
        on_timeout=lambda: stack.log_of("old"),
    )
    time.sleep(4)  # several maintenance passes (1 s each here): none sends the run back to worker A
    assert stack.log_of("old").count(f"run {train} not claimed") == 1, stack.log_of("old")
    with db.session(readonly=True) as s:
        run = repo.get_run(s, train)
        assert run.status == RunStatus.QUEUED and run.attempts == 0 and run.environment is None
        assert run.enqueued_at is None and run.code_identity == code_b
    listed = _in(b, stack, "-m", "orchestrator.cli", "workers").stdout
    assert f"code {code_a[:12]} (not this code, {code_b[:12]}" in listed, listed
    assert f"{train} (train scratch): queued for code {code_b[:12]}, and no worker with that code" in listed

    # A worker started from B's code sends and runs it (and the report), recording B's code.
    _worker_from(b, stack, "new")
    wait_for(
        lambda: {r["status"] for r in _runs(stack)} == {"succeeded"},
        timeout=400,
        what="the sweep to succeed on worker B",
        on_timeout=lambda: stack.log_of("new") + stack.log_of("old"),
    )
    with db.session(readonly=True) as s:
        run = repo.get_run(s, train)
        assert run.environment is not None and run.environment["code"] == version_b.strip()
        assert run.worker is None or run.worker == "new@test"
        assert run.attempts == 1
    assert "not claimed" not in stack.log_of("new")


def _live_codes(stack: Stack) -> set[str | None]:
    with stack.db().session(readonly=True) as s:
        return {w.code_identity for w in repo.live_workers(s, within_seconds=30)}


def test_submit_stops_with_a_message_when_its_source_changes_on_disk_and_retry_runs_the_new_code(
    embedded_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The local worker runs only the code it loaded: what runs finishes, nothing new is claimed, and
    submit says so instead of waiting for ever; retry from the changed source finishes the sweep."""
    stack = embedded_stack
    tree = _tree(tmp_path_factory.mktemp("trees") / "c", "before")
    print_version = (
        "from contract.version import code_identity, code_version; print(code_identity(), code_version())"
    )
    _, before = _in(tree, stack, "-c", print_version).stdout.split(maxsplit=1)
    submit = subprocess.Popen(  # two trainings, one at a time: the second waits while the first runs
        [sys.executable, "-m", "orchestrator.cli", "submit", "train", "--regime", "scratch"]
        + ["--profile", "smoke", "--seeds", "2"],
        env=dict(stack.env, PYTHONPATH=str(tree)),
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = wait_for(
            lambda: next((r for r in _runs(stack) if r["status"] == "running"), None),
            timeout=240,
            what="the first training to start",
            on_timeout=lambda: _logs(stack),
        )
        runners = tree / "worker" / "runners.py"
        runners.write_text(runners.read_text() + "\n# edited while the sweep runs\n")
        out, err = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    assert submit.returncode == 1, out[-2000:] + err[-2000:]
    assert "the source changed on disk while the sweep ran" in err and "orchestrator retry" in err, err
    sweep_id = json.loads(stack.orchestrator("status", "--json", check=True).stdout)["sweep_id"]
    db = stack.db()
    with db.session(readonly=True) as s:
        done = repo.get_run(s, first["id"])
        assert done.status == RunStatus.SUCCEEDED  # it ran to its end with the code it started with
        assert done.environment is not None and done.environment["code"] == before.strip()
        second = repo.get_run(s, next(r.id for r in repo.sweep_runs(s, sweep_id) if r.id != first["id"]))
        assert second.status == RunStatus.CANCELLED and second.environment is None  # never claimed
        assert repo.live_workers(s, within_seconds=3600) == []

    after, after_version = _in(tree, stack, "-c", print_version).stdout.split(maxsplit=1)
    retried = _in(tree, stack, "-m", "orchestrator.cli", "retry", sweep_id, timeout=600)
    assert retried.returncode == 0, retried.stdout[-2000:] + retried.stderr[-2000:]
    with db.session(readonly=True) as s:
        run = repo.get_run(s, second.id)
        assert run.status == RunStatus.SUCCEEDED and run.code_identity == after  # retried for this code
        assert run.environment is not None and run.environment["code"] == after_version.strip()
