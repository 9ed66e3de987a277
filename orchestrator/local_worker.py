"""The worker that `submit` starts by itself on the embedded broker, so one command runs everything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from contract.settings import Settings
from orchestrator.errors import OrchestratorError


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count: they are dead and only
    wait for init to reap them (the worker's children are re-parented when it dies)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, counting zombies too
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


class LocalWorker:
    """A `orchestrator worker` child process with its log in ``$CONVLAB_HOME/logs``; stopped on exit."""

    def __init__(self, settings: Settings, *, slots: int = 1, sweep_id: str | None = None) -> None:
        """Start it. It ends by itself if this process dies without stopping it (SIGKILL): then it hands
        its runs back and cancels the unfinished runs of ``sweep_id``, as Ctrl-C would (``worker.owner``).
        Create it from the main thread: the kernel's parent-death signal follows the creating thread."""
        from worker.launch import worker_launch

        launch = worker_launch(slots=slots, loglevel="INFO", owned=True, owner_sweep=sweep_id)
        self.name = launch.name
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = logs / f"worker-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
        env = dict(launch.env, CONVLAB_HOME=str(settings.home))
        # The data and weights exactly as submit checked them (made absolute there).
        if settings.cifar10_path is not None:
            env["CONVLAB_CIFAR10"] = settings.cifar10_path
        if settings.weights_dir is not None:
            env["CONVLAB_WEIGHTS_DIR"] = settings.weights_dir
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            launch.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, grace: float = 60.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole group if it does not end in time."""
        if self._log.closed:
            return
        if self.alive():
            self._proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.alive():
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._log.close()

    def kill(self, timeout: float = 10.0) -> None:
        """Stop now (Ctrl-C): SIGKILL to the worker's whole process group (Celery's main process, its
        task process, its maintenance process), then wait until none of them is left.

        A training killed mid-epoch loses that epoch only: checkpoints are renamed into place, and the
        database rolls back an unfinished transaction. Once this returns, the runs the worker held may be
        handed back (``repository.release_worker_runs``): nothing of it can write any more.
        """
        pgid = self._proc.pid  # start_new_session: the worker leads its own process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self._proc.wait()
        deadline = time.monotonic() + timeout
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                raise OrchestratorError(f"local worker {self.name}: group {pgid} survives SIGKILL")
            time.sleep(0.05)
        self._log.close()

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
