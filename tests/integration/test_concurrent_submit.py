"""Two `submit all` of one plan at the same moment train it once; a damaged result is not reused.

Real processes on tiny data: two `orchestrator submit` processes started together, on Redis +
PostgreSQL with one worker, and on the embedded default (each submit starts its own local worker).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
import sqlalchemy as sa

from orchestrator.local_worker import _group_alive
from storage import repository as repo
from storage.models import Run, RunKind, Worker
from tests.integration.harness import ROOT, Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBMIT = ("submit", "all", "--profile", "smoke")


def _submit_together(stack: Stack, *extra: str, timeout: float) -> list[str]:
    """Start two identical submits at once; their sweep ids once both have exited 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *SUBMIT, *extra],
            env=stack.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    sweeps = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
        sweeps.append(re.search(r"sweep (s-\w+)", out).group(1))  # type: ignore[union-attr]
    return sweeps


def _runs(stack: Stack, *sweeps: str) -> list[Run]:
    with stack.db().session(readonly=True) as s:
        return [repo.get_run(s, r.id) for sweep in sweeps for r in repo.sweep_runs(s, sweep)]


def _assert_one_execution_per_identity(stack: Stack, sweeps: list[str]) -> None:
    runs = _runs(stack, *sweeps)
    assert {str(r.status) for r in runs} == {"succeeded"}, [(r.id, r.label, r.status, r.error) for r in runs]
    executed = Counter((r.kind, r.spec_hash) for r in runs if r.reused_run_id is None)
    assert all(n == 1 for n in executed.values()), executed
    kinds = Counter(kind for kind, _ in executed)
    assert kinds == {RunKind.TRAIN: 3, RunKind.VISUALIZE: 3, RunKind.REPORT: 2}, kinds
    for sweep in sweeps:
        assert stack.orchestrator("check", sweep).returncode == 0


def _assert_no_local_worker_left(stack: Stack) -> None:
    """Every local worker a submit started is marked stopped and no process of it is left."""
    with stack.db().session(readonly=True) as s:
        workers = list(s.scalars(sa.select(Worker)))
        assert workers and repo.live_workers(s, within_seconds=3600) == [], [w.name for w in workers]
    for w in workers:
        wait_for(
            lambda pid=w.pid: not _group_alive(pid), timeout=30, what=f"worker {w.name}'s processes to end"
        )


def test_two_submits_at_once_on_redis_and_postgres_train_each_identity_once(server_stack: Stack) -> None:
    server_stack.start_worker("w1")
    sweeps = _submit_together(server_stack, "--no-wait", timeout=300)

    def ended() -> bool:
        return all(r.status.is_terminal for r in _runs(server_stack, *sweeps))

    wait_for(ended, timeout=900, what="both sweeps to end", on_timeout=lambda: server_stack.log_of("w1"))
    _assert_one_execution_per_identity(server_stack, sweeps)


def test_two_submits_at_once_on_the_embedded_default_then_a_damaged_training_runs_again(
    embedded_stack: Stack,
) -> None:
    sweeps = _submit_together(embedded_stack, timeout=1200)
    _assert_one_execution_per_identity(embedded_stack, sweeps)
    _assert_no_local_worker_left(embedded_stack)

    # The ImageNet training's model is changed on disk after it succeeded.
    runs = _runs(embedded_stack, *sweeps)
    trained = next(r for r in runs if r.label == "imagenet" and r.reused_run_id is None)
    with embedded_stack.db().session(readonly=True) as s:
        model = next(a.path for a in repo.artifacts_of(s, trained.id) if a.path.endswith(".keras"))
    (embedded_stack.settings.artifacts_dir / model).write_bytes(b"changed on disk")
    follower = next(sweep for sweep in sweeps if sweep != trained.sweep_id)
    checked = embedded_stack.orchestrator("check", follower)  # follows the joined run to the damaged one
    assert checked.returncode == 1 and f"reuses {trained.id}" in checked.stdout, checked.stdout

    again = embedded_stack.orchestrator(*SUBMIT, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"not reused, damaged: {trained.id}" in again.stderr
    third = re.search(r"sweep (s-\w+)", again.stdout).group(1)  # type: ignore[union-attr]
    status = json.loads(embedded_stack.orchestrator("status", third, "--json", check=True).stdout)["runs"]
    by_label = {(r["kind"], r["label"]): r["status"] for r in status}
    assert by_label[("train", "imagenet")] == "succeeded"  # ran again, not "cached"
    assert by_label[("train", "scratch")] == "cached"
    assert embedded_stack.orchestrator("check", third).returncode == 0

    _assert_no_local_worker_left(embedded_stack)

    repaired = embedded_stack.orchestrator("check", "--repair")
    assert repaired.returncode == 1 and f"{trained.id}: marked failed (damaged)" in repaired.stdout
    assert embedded_stack.orchestrator("check", third).returncode == 0
