"""Several hosts that share no disk: only Redis, PostgreSQL and an S3 server (SeaweedFS), real processes.

Each "host" is a worker (or a CLI) with its own ``CONVLAB_HOME``: its own scratch files and download
cache, nothing else in common with the others. A host is lost by SIGKILLing its worker and deleting its
whole home. The end state asserted is what a user relies on: every run succeeded, the lost training
resumed from its last committed epoch (not from epoch 0), the visualizations and the report were made on
other hosts from what the lost one stored, ``orchestrator check`` passes from a host that never ran a task,
and ``report --out`` there gets the report with its figures.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from storage import repository as repo
from storage.db import Database
from storage.models import RunKind
from storage.object_store import ObjectStore
from tests.integration.harness import Stack, kill_worker, run_state, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


def _submit(stack: Stack, *args: str, home: Path) -> str:
    result = stack.orchestrator("submit", *args, "--profile", "smoke", "--no-wait", home=home)
    assert result.returncode == 0, result.stderr + result.stdout
    return re.search(r"sweep (s-\w+)", result.stdout).group(1)  # type: ignore[union-attr]


def _runs(stack: Stack, sweep_id: str, home: Path) -> list[dict]:
    status = stack.orchestrator("status", sweep_id, "--json", check=True, home=home)
    return json.loads(status.stdout)["runs"]


def _all_ended(stack: Stack, sweep_id: str, home: Path) -> list[dict] | None:
    runs = _runs(stack, sweep_id, home)
    return runs if all(r["status"] in TERMINAL for r in runs) else None


def _epochs(stack: Stack, run_id: str) -> dict[int, tuple[float, float]]:
    """epoch -> (loss, wall seconds) as recorded: a retrained epoch differs at least in its seconds."""
    with stack.db().session(readonly=True) as s:
        return {m.epoch: (m.loss, m.seconds) for m in repo.metric_history(s, run_id)}


def _ended_state(db: Database, run_id: str) -> dict | None:
    """The run's state once it has ended, else None (for ``wait_for``)."""
    state = run_state(db, run_id)
    return state if state["status"] in TERMINAL else None


def test_a_lost_host_loses_nothing(s3_stack: Stack, s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host_a, host_b, laptop = tmp_path / "host-a", tmp_path / "host-b", tmp_path / "laptop"
    for home in (host_a, host_b, laptop):
        home.mkdir()
    sweep_id = _submit(s3_stack, "all", "--set", "epochs=4", home=laptop)
    s3_stack.start_worker("a", home=host_a)
    db = s3_stack.db()

    def training_past_epoch_1() -> str | None:
        for run in _runs(s3_stack, sweep_id, laptop):
            if run["kind"] == "train" and run["status"] == "running" and (run.get("epoch") or 0) >= 1:
                return str(run["id"])
        return None

    lost_run = wait_for(
        training_past_epoch_1,
        timeout=240,
        what="a training past epoch 1",
        on_timeout=lambda: s3_stack.log_of("a"),
    )
    kill_worker(s3_stack.workers[0], signal.SIGKILL)
    before = _epochs(s3_stack, lost_run)
    committed = run_state(db, lost_run)["last_epoch"]
    shutil.rmtree(host_a)  # the host is gone, with its disk: scratch files, download cache, all

    s3_stack.start_worker("b", home=host_b)
    runs = wait_for(
        lambda: _all_ended(s3_stack, sweep_id, laptop),
        timeout=400,
        what="the sweep to end on host b",
        on_timeout=lambda: s3_stack.log_of("b") + json.dumps(_runs(s3_stack, sweep_id, laptop), default=str),
    )
    assert {r["status"] for r in runs} == {"succeeded"}, [
        (r["label"], r["status"], r.get("error")) for r in runs
    ]

    state = run_state(db, lost_run)
    assert state["epochs"] == [1, 2, 3, 4] and state["attempts"] == 2, state
    after = _epochs(s3_stack, lost_run)
    # Resumed, not restarted: the epochs committed before the loss keep the lost host's values (a resumed
    # attempt re-records them from the checkpoint it loaded from the store, unchanged).
    assert committed >= 1 and all(after[e] == before[e] for e in range(1, committed + 1)), (before, after)
    with db.session(readonly=True) as s:
        kinds = {r.id: r.kind for r in repo.sweep_runs(s, sweep_id)}
        workers = {r.id: r.worker for r in repo.sweep_runs(s, sweep_id)}
    later = [rid for rid, kind in kinds.items() if kind != RunKind.TRAIN]
    assert later and all(workers[rid] == "b@test" for rid in later), workers  # made on another host
    assert not (host_b / "artifacts").exists()  # nothing went to a local folder store

    # An upload the lost host made and never committed (killed between its PUT and the commit): an orphan
    # that nothing references, which `gc` on any host removes, leaving what the runs stand on.
    store = ObjectStore(
        s3_stack.env["CONVLAB_ARTIFACTS_URL"],
        cache_dir=tmp_path / "cache",
        scratch_dir=tmp_path / "scratch",
        cache_limit_bytes=1 << 30,
        options=s3_server.options(),
    )
    orphan = f"{store.attempt_dir(lost_run, 1)}/checkpoint/model-e0099.keras"
    store.write_bytes(orphan, b"an upload no commit names")
    gc = s3_stack.orchestrator("gc", home=laptop)
    assert gc.returncode == 0 and f"removed {orphan}" in gc.stdout, gc.stdout + gc.stderr
    assert not store.exists(orphan)

    check = s3_stack.orchestrator("check", sweep_id, home=laptop)
    assert check.returncode == 0 and "all intact" in check.stdout, check.stdout + check.stderr
    out = tmp_path / "report-here"
    report = s3_stack.orchestrator("report", sweep_id, "--out", str(out), home=laptop)
    assert report.returncode == 0, report.stdout + report.stderr
    html = (out / "report.html").read_text()
    # Self-contained: the figures (and the visualizations' pictures) are embedded, none is a placeholder.
    assert html.count("data:image/png;base64,") >= 8
    assert "placeholder" not in report.stderr, report.stderr


def test_a_store_outage_mid_training_commits_no_epoch_without_its_files(
    s3_stack: Stack,
    s3_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    sweep_id = _submit(s3_stack, "train", "--regime", "imagenet", "--set", "epochs=4", home=host)
    (run,) = _runs(s3_stack, sweep_id, host)
    s3_stack.start_worker("w", home=host)
    db = s3_stack.db()
    wait_for(lambda: run_state(db, run["id"])["last_epoch"] >= 1, timeout=240, what="epoch 1")
    s3_server.stop()
    try:
        state = wait_for(
            lambda: _ended_state(db, run["id"]),
            timeout=240,
            what="the attempt to give up on the store",
            on_timeout=lambda: s3_stack.log_of("w"),
        )
    finally:
        s3_server.start()
    committed = state["last_epoch"]
    assert state["status"] == "failed" and committed < 4, state
    assert f"s3://{s3_server.bucket}/" in state["error"] and s3_server.secret_key not in state["error"]
    assert "\n" not in state["error"]
    check = s3_stack.orchestrator("check", run["id"], home=host)
    assert check.returncode == 0, check.stdout  # every committed epoch's files are in the store

    retried = s3_stack.orchestrator("retry", run["id"], home=host)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    state = wait_for(
        lambda: _ended_state(db, run["id"]),
        timeout=240,
        what="the retried run to end",
        on_timeout=lambda: s3_stack.log_of("w"),
    )
    assert state["status"] == "succeeded" and state["epochs"] == [1, 2, 3, 4], state
    check = s3_stack.orchestrator("check", run["id"], home=host)
    assert check.returncode == 0 and "all intact" in check.stdout, check.stdout


def test_a_store_that_hangs_mid_upload_does_not_stop_the_heartbeat(
    s3_stack: Stack,
    s3_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # The store is frozen (SIGSTOP) after epoch 1 for 15 s, almost 4 leases (4 s): the next epoch's upload
    # hangs, and the run's heartbeat must go on meanwhile, or a reaper would take the run over. Resumed
    # within the upload's retry window, the same attempt finishes the run.
    host = tmp_path / "host"
    host.mkdir()
    sweep_id = _submit(s3_stack, "train", "--regime", "imagenet", "--set", "epochs=4", home=host)
    (run,) = _runs(s3_stack, sweep_id, host)
    s3_stack.start_worker("w", home=host)
    db = s3_stack.db()
    wait_for(lambda: run_state(db, run["id"])["last_epoch"] >= 1, timeout=240, what="epoch 1")

    def heartbeat() -> object:
        with db.session(readonly=True) as s:
            return repo.get_run(s, run["id"]).heartbeat_at

    s3_server.pause()
    try:
        beats, deadline = set(), time.monotonic() + 15
        while time.monotonic() < deadline:
            beats.add(heartbeat())
            time.sleep(0.5)
        during = run_state(db, run["id"])
    finally:
        s3_server.resume()
    # Epoch 2 trains in about a second here: still at epoch 1 after 15 s means its upload was hanging.
    assert during["status"] == "running" and during["last_epoch"] == 1, during
    assert len(beats) >= 8, f"the heartbeat stalled while the store hung: {sorted(map(str, beats))}"
    state = wait_for(
        lambda: _ended_state(db, run["id"]),
        timeout=240,
        what="the run to end",
        on_timeout=lambda: s3_stack.log_of("w"),
    )
    assert state["status"] == "succeeded" and state["epochs"] == [1, 2, 3, 4], state
    assert state["attempts"] == 1, state  # never taken over
