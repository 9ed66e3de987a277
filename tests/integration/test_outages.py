"""Outages of the services themselves, on real worker processes: PostgreSQL refusing connections (what a
restart or a failover does) and the broker's connections cut or its server restarted, mid-plan.

Each test asserts the end state a user relies on: every run succeeded, one epoch row per epoch (one
training's worth per run), `orchestrator check` exits 0, and no process of the worker is left once it
has been stopped. The PostgreSQL outage is made on a database the test created (`ALLOW_CONNECTIONS
false` plus `pg_terminate_backend` of its sessions), the Redis faults on a redis-server of the test's own
(append-only file on, its own folder): never on the shared servers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.integration.harness import Stack, run_state, wait_for
from tests.integration.test_redis_restart import OwnRedis
from tests.services import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")
OUTAGE_SECONDS = 15


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if not shutil.which("redis-server"):
        service_missing("redis-server binary", "not on PATH")
    redis = OwnRedis(tmp_path / "redis")
    redis.folder.mkdir()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def stack(server_stack: Stack, own_redis: OwnRedis) -> Stack:
    """Redis (a server of this test's own) + PostgreSQL (a database of this test's own)."""
    server_stack.env["CONVLAB_BROKER_URL"] = f"redis://127.0.0.1:{own_redis.port}/0"
    # Shorter than the outage, long enough that a task process importing TensorFlow on a loaded machine
    # (the import holds the GIL, and the heartbeat thread with it) is not taken for dead.
    server_stack.env["CONVLAB_LEASE_SECONDS"] = "10"
    # A message received but never claimed is sent again after this (seconds here, minutes by default).
    server_stack.env["CONVLAB_RESEND_SECONDS"] = "20"
    return server_stack


def submit_training(stack: Stack, regime: str, epochs: int) -> str:
    result = stack.orchestrator(
        "submit", "train", "--regime", regime, "--profile", "smoke", "--set", f"epochs={epochs}", "--no-wait"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    sweep_id = re.search(r"sweep (s-\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    runs = json.loads(stack.orchestrator("status", sweep_id, "--json", check=True).stdout)["runs"]
    assert len(runs) == 1, runs
    return runs[0]["id"]


def wait_ended(stack: Stack, run_id: str, timeout: float = 420) -> dict:
    return wait_for(
        lambda: (lambda st: st if st["status"] in TERMINAL else None)(run_state(stack.db(), run_id)),
        timeout=timeout,
        what=f"{run_id} to end",
        on_timeout=lambda: stack.log_of("w1") + "\n" + json.dumps(run_state(stack.db(), run_id)),
    )


def assert_all_succeeded_once(stack: Stack, runs: dict[str, int]) -> None:
    """Every run succeeded with each of its epochs stored once, and every file is intact."""
    for run_id, epochs in runs.items():
        state = wait_ended(stack, run_id)
        assert state["status"] == "succeeded", state
        assert state["epochs"] == list(range(1, epochs + 1)), state
    check = stack.orchestrator("check")
    assert check.returncode == 0, check.stdout + check.stderr


def stop_worker_and_assert_nothing_left(stack: Stack, worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (as `docker stop`): the worker ends, and with it every process of its group."""
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)

    def group_gone() -> bool:
        try:
            os.killpg(worker.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, timeout=30, what="every process of the worker to end")


def test_a_postgres_outage_strands_no_run(stack: Stack, pg_database: str) -> None:
    """PostgreSQL refuses connections for 15 s while a training runs and a second run waits in Redis."""
    training = submit_training(stack, "scratch", epochs=6)
    waiting = submit_training(stack, "imagenet", epochs=1)  # behind it in Redis (one slot)
    worker = stack.start_worker("w1")
    db = stack.db()
    wait_for(
        lambda: run_state(db, training)["last_epoch"] >= 1,
        timeout=240,
        what="the training's first epoch",
        on_timeout=lambda: stack.log_of("w1"),
    )
    assert run_state(db, waiting)["status"] == "queued"
    db.dispose()  # the test's own sessions would be cut too

    name = make_url(pg_database).database
    admin_url = pg_database.rsplit("/", 1)[0] + "/postgres"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        try:
            deadline = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < deadline:  # sessions that were mid-connect when it closed, too
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                    {"n": name},
                )
                time.sleep(0.5)
        finally:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()

    assert_all_succeeded_once(stack, {training: 6, waiting: 1})
    stop_worker_and_assert_nothing_left(stack, worker)


def submit_plan(stack: Stack, seeds: int, epochs: int) -> list[str]:
    result = stack.orchestrator(
        "submit", "train", "--regime", "scratch", "--seeds", str(seeds), "--profile", "smoke",
        "--set", f"epochs={epochs}", "--no-wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    sweep_id = re.search(r"sweep (s-\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    runs = json.loads(stack.orchestrator("status", sweep_id, "--json", check=True).stdout)["runs"]
    assert len(runs) == seeds, runs
    return [run["id"] for run in runs]


def started(stack: Stack, run_id: str) -> bool:
    state = run_state(stack.db(), run_id)
    return state["last_epoch"] >= 1 or state["status"] in TERMINAL


def test_killed_broker_connections_lose_no_run(stack: Stack, own_redis: OwnRedis) -> None:
    """Every connection of the worker to Redis is cut (CLIENT KILL) mid-training and between tasks."""
    import redis

    # 6 epochs: a training after the first in a process runs on the kept compiled model, at about half a
    # second an epoch here, and the cuts must land inside it.
    epochs = 6
    runs = submit_plan(stack, seeds=3, epochs=epochs)
    worker = stack.start_worker("w1")
    client = redis.Redis(port=own_redis.port)
    try:
        for run_id in runs[:2]:
            wait_for(
                lambda r=run_id: started(stack, r),
                timeout=420,
                what=f"{run_id} to train",
                on_timeout=lambda: stack.log_of("w1"),
            )
            # Every client but this one: the worker's consumer, its maintenance process, its task process.
            # Asked until there is one: the last cut's reconnections may not have come back yet.
            wait_for(
                lambda: client.client_kill_filter(_type="normal", skipme=True),
                timeout=60,
                what="a connection of the worker to cut",
                on_timeout=lambda: stack.log_of("w1"),
            )
            time.sleep(2)
            client.client_kill_filter(_type="normal", skipme=True)  # its reconnections, too
    finally:
        client.close()
    assert_all_succeeded_once(stack, dict.fromkeys(runs, epochs))
    stop_worker_and_assert_nothing_left(stack, worker)


def test_a_redis_restart_mid_plan_loses_no_run(stack: Stack, own_redis: OwnRedis) -> None:
    """Redis (append-only file on) restarted while a training runs and two more wait in it."""
    runs = submit_plan(stack, seeds=3, epochs=2)
    worker = stack.start_worker("w1")
    wait_for(
        lambda: started(stack, runs[0]),
        timeout=420,
        what=f"{runs[0]} to train",
        on_timeout=lambda: stack.log_of("w1"),
    )
    own_redis.stop()  # as `docker restart redis`: a clean shutdown writes the append-only file
    time.sleep(5)
    own_redis.start()
    assert_all_succeeded_once(stack, dict.fromkeys(runs, 2))
    stop_worker_and_assert_nothing_left(stack, worker)
