"""Ctrl-C during `orchestrator submit` on the embedded default, then `retry SWEEP`, as a user does it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.local_worker import _group_alive
from storage import repository as repo
from tests.integration.harness import ROOT, Stack, run_state, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _runs(stack: Stack) -> list[dict]:
    result = stack.orchestrator("status", "--json")
    return json.loads(result.stdout)["runs"] if result.returncode == 0 else []


def test_ctrl_c_stops_the_local_worker_and_leaves_nothing_running_then_retry_resumes(
    embedded_stack: Stack,
) -> None:
    stack = embedded_stack
    submit = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "submit", "train", "--regime", "scratch"]
        + ["--profile", "smoke", "--set", "epochs=20"],
        env=stack.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it. A shell starts background jobs with SIGINT ignored, and an ignored
        # signal stays ignored across exec: pytest run as `pytest &` would hand that on and the Ctrl-C
        # below would do nothing (seen here: the training ran to its end).
        preexec_fn=_sigint_default,
    )
    try:
        run = wait_for(
            lambda: next((r for r in _runs(stack) if r["status"] == "running" and r["epoch"] >= 1), None),
            timeout=240,
            what="the training to finish its first epoch",
            on_timeout=lambda: "".join(p.read_text() for p in (stack.home / "logs").glob("*.log")),
        )
        db = stack.db()
        with db.session() as s:
            worker = next(w for w in repo.live_workers(s, within_seconds=60) if w.name == run["worker"])
            worker_pid = worker.pid

        interrupted = time.monotonic()
        submit.send_signal(signal.SIGINT)
        out, err = submit.communicate(timeout=30)
        elapsed = time.monotonic() - interrupted
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()

    assert submit.returncode == 130, out + err
    assert elapsed < 10, f"Ctrl-C took {elapsed:.1f} s"
    # It says what happened and how to resume.
    assert f"stopped the local worker {run['worker']}" in err
    assert f"{run['id']} (train scratch): cancelled at epoch" in err
    sweep_id = json.loads(stack.orchestrator("status", "--json", check=True).stdout)["sweep_id"]
    assert f"orchestrator retry {sweep_id}" in err
    # Nothing looks alive any more: no run running, no worker process, no live worker listed.
    state = run_state(db, run["id"])
    assert state["status"] == "cancelled" and state["worker"] is None
    assert not _group_alive(worker_pid)
    assert "no live workers" in stack.orchestrator("workers", check=True).stdout
    epochs_before = state["epochs"]
    assert epochs_before and epochs_before[0] == 1

    # `retry SWEEP` on the embedded default starts a local worker itself and follows to the end.
    retried = stack.orchestrator("retry", sweep_id, timeout=600)
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    assert "started local worker" in retried.stdout
    state = run_state(db, run["id"])
    assert state["status"] == "succeeded", state
    assert state["epochs"] == list(range(1, 21))  # every epoch once: resumed, not restarted
    assert not (Path(stack.home) / "broker" / "queue").exists() or not any(
        (Path(stack.home) / "broker" / "queue").iterdir()
    )
