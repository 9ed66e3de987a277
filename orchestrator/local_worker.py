"""The worker that `submit` starts by itself on the embedded broker, so one command runs everything."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from storage.config import Settings


class LocalWorker:
    """A `orchestrator worker` child process with its log in ``$CONVLAB_HOME/logs``; stopped on exit."""

    def __init__(self, settings: Settings, *, slots: int = 1) -> None:
        from worker.launch import worker_launch

        launch = worker_launch(slots=slots, loglevel="INFO")
        self.name = launch.name
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = logs / f"worker-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
        env = dict(launch.env, CONVLAB_HOME=str(settings.home))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            launch.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, grace: float = 60.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole group if it does not end in time."""
        if self.alive():
            self._proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.alive():
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
