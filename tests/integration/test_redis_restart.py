"""A backlog queued in Redis survives a Redis restart (append-only file on), as in the compose file."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Stack, run_state, wait_for
from tests.services import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--save",
                "",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._ping(), timeout=20, what=f"redis on port {self.port}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # a clean shutdown, as `docker restart redis` does
            self.proc.wait(timeout=20)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if not shutil.which("redis-server"):
        service_missing("redis-server binary", "not on PATH")
    redis = OwnRedis(tmp_path / "redis")
    redis.folder.mkdir()
    redis.start()
    yield redis
    redis.stop()


def test_backlog_survives_a_redis_restart(server_stack: Stack, own_redis: OwnRedis) -> None:
    server_stack.env["CONVLAB_BROKER_URL"] = f"redis://127.0.0.1:{own_redis.port}/0"
    result = server_stack.orchestrator(
        "submit", "train", "--regime", "scratch", "--seeds", "3", "--profile", "smoke", "--no-wait"
    )
    assert result.returncode == 0, result.stderr
    sweep_id = re.search(r"sweep (s-\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    runs = json.loads(server_stack.orchestrator("status", sweep_id, "--json", check=True).stdout)["runs"]
    assert len(runs) == 3

    time.sleep(1.5)  # the append-only file is fsynced every second
    own_redis.stop()
    own_redis.start()

    server_stack.start_worker("w1")
    db = server_stack.db()
    for run in runs:
        state = wait_for(
            lambda r=run: run_state(db, r["id"])["status"] == "succeeded" and run_state(db, r["id"]),
            timeout=240,
            what=f"{run['id']} to succeed",
            on_timeout=lambda: server_stack.log_of("w1"),
        )
        assert state["epochs"] == [1]
