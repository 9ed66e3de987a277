"""Real processes for integration tests: `orchestrator` commands and workers, synchronised on the database."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contract.settings import Settings, load_settings
from storage.db import Database, get_database

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Stack:
    """One isolated convlab installation: its home, database, broker, data and weights."""

    home: Path
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def db(self) -> Database:
        db = get_database(self.settings)
        db.ensure_schema()
        return db

    def host_env(self, home: Path | None) -> dict[str, str]:
        """The stack's settings as seen from another host: the same services, its own ``home``."""
        return self.env if home is None else {**self.env, "CONVLAB_HOME": str(home)}

    def orchestrator(
        self, *args: str, timeout: float = 300, check: bool = False, home: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=self.host_env(home),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def start_worker(self, name: str, *extra: str, home: Path | None = None) -> subprocess.Popen[bytes]:
        """A worker on this host, or with ``home`` on another one (which shares only the services)."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "worker", "--name", f"{name}@test", *extra],
            env=self.host_env(home),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def log_of(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def kill_worker(proc: subprocess.Popen[bytes], sig: int) -> None:
    """SIGKILL: the whole worker (main process and children). SIGTERM: the main process only, like docker."""
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(sig)


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, on_timeout: Callable[[], str] = str
) -> T:
    """Poll ``check`` until it returns something truthy, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def submit_one_run(stack: Stack, *args: str) -> str:
    """``submit ARGS --profile smoke --no-wait`` of a plan of one run; that run's id."""
    result = stack.orchestrator("submit", *args, "--profile", "smoke", "--no-wait")
    assert result.returncode == 0, result.stderr + result.stdout
    sweep_id = re.search(r"sweep (s-\w+)", result.stdout).group(1)  # type: ignore[union-attr]
    runs = json.loads(stack.orchestrator("status", sweep_id, "--json", check=True).stdout)["runs"]
    assert len(runs) == 1, runs
    return str(runs[0]["id"])


def run_detail(stack: Stack, run_id: str) -> dict[str, Any]:
    """``status RUN --json``."""
    return dict(json.loads(stack.orchestrator("status", run_id, "--json", check=True).stdout))


def run_state(db: Database, run_id: str) -> dict[str, Any]:
    from storage import repository as repo

    with db.session() as s:
        run = repo.get_run(s, run_id)
        epochs = [m.epoch for m in repo.metric_history(s, run_id)]
        return {
            "status": str(run.status),
            "attempts": run.attempts,
            "last_epoch": run.last_epoch,
            "epochs": epochs,
            "worker": run.worker,
            "error": run.error,
            "artifacts": [a.path for a in repo.artifacts_of(s, run_id)],
        }


def pool_processes(main_pid: int) -> list[int]:
    """The prefork pool's task processes of a Celery main process: its forked children (same command
    line), not the spawned maintenance process (a `multiprocessing` command line)."""
    main_cmdline = Path(f"/proc/{main_pid}/cmdline").read_bytes()
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(
                int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("PPid:")
            )
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration, ValueError):
            continue  # the process ended while we looked
        if ppid == main_pid and cmdline == main_cmdline:
            children.append(int(status.parent.name))
    return sorted(children)


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("State:")
        )
    except (OSError, StopIteration):
        return False
    return state != "Z"
