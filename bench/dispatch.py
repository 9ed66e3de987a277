"""Dispatch latency and queue throughput: convlab vs plain Celery on the same Redis, in one invocation.

    python bench/dispatch.py [--tasks 40] [--redis redis://127.0.0.1:6379/12]

Both workers use the same Celery settings (prefork, 1 slot, acks_late, prefetch 1). Measured twice each:
with one fresh process per task (max_tasks_per_child=1, convlab's choice for TensorFlow) and with a
long-lived process, so the cost of the process model and the cost of convlab's bookkeeping (database
claim, heartbeat, finish) are told apart. convlab runs use a no-op body (bench/noop_app.py); latency is
send -> task body start; throughput is N no-op tasks sent at once until the last one ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115
    return subprocess.Popen(
        argv, env=env, cwd=ROOT / "bench", stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_ready(log: Path) -> None:
    """The benchmark is about a warm worker: wait until Celery says it is ready (queues declared)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"worker did not start; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _celery_argv(app: str, queue: str, per_child: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--max-tasks-per-child",
        str(per_child),
        "--prefetch-multiplier",
        "1",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def plain(broker: str, tasks: int, per_child: int, home: Path) -> tuple[float, float]:
    import redis

    env = dict(os.environ, BENCH_BROKER_URL=broker, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    os.environ["BENCH_BROKER_URL"] = broker  # for importing plain_app here, to send
    sys.path.insert(0, str(ROOT / "bench"))
    client = redis.Redis.from_url(broker, socket_timeout=300)  # BLPOP waits longer than the default
    client.flushdb()
    log = home / f"plain-{per_child}.log"
    proc = _start(_celery_argv("plain_app", "plain", per_child), env, log)
    try:
        _wait_ready(log)
        from plain_app import app  # type: ignore[import-not-found]

        latencies = []
        for _ in range(5):  # warm-up and latency: one at a time
            app.send_task("bench.noop", args=[time.time()], queue="plain")
            latencies.append(float(client.blpop(["bench:latency"], timeout=60)[1]))  # type: ignore[index]
        started = time.perf_counter()
        for _ in range(tasks):
            app.send_task("bench.noop", args=[time.time()], queue="plain")
        for _ in range(tasks):
            client.blpop(["bench:latency"], timeout=120)
        return statistics.median(latencies[1:]), tasks / (time.perf_counter() - started)
    finally:
        _stop(proc)


def convlab(broker: str, tasks: int, per_child: int, home: Path) -> tuple[float, float]:
    import redis

    from contract.settings import load_settings
    from storage import repository as repo
    from storage.db import get_database
    from worker.app import create_app
    from worker.dispatch import dispatch_ready

    redis.Redis.from_url(broker).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env.update(
        CONVLAB_HOME=str(home / f"convlab-{per_child}"), CONVLAB_BROKER_URL=broker, PYTHONPATH=str(ROOT)
    )
    settings = load_settings(env)
    db = get_database(settings)
    app = create_app(settings)
    argv = _celery_argv("noop_app", "convlab", per_child)
    log = home / f"convlab-{per_child}.log"
    proc = _start(argv, env, log)
    _wait_ready(log)

    def submit(n: int) -> list[str]:
        with db.session() as s:
            sweep = repo.create_sweep(s, plan="bench", profile="none", overrides={}, code_version="bench")
            ids = [
                repo.create_run(
                    s,
                    sweep_id=sweep.id,
                    kind="report",
                    label="noop",
                    spec={"sweep_id": sweep.id},
                    spec_hash=f"bench-{sweep.id}-{i}",  # distinct: one live run per identity
                    seed=0,
                ).id
                for i in range(n)
            ]
        dispatch_ready(app, db)
        return ids

    def wait(ids: list[str]) -> list[float]:
        while True:
            with db.session(readonly=True) as s:
                runs = [repo.get_run(s, i) for i in ids]
                if all(r.status == "succeeded" for r in runs):
                    return [(r.started_at - r.enqueued_at).total_seconds() for r in runs]  # type: ignore[operator]
            time.sleep(0.05)

    try:
        latencies = [wait(submit(1))[0] for _ in range(5)]
        started = time.perf_counter()
        wait(submit(tasks))
        return statistics.median(latencies[1:]), tasks / (time.perf_counter() - started)
    finally:
        _stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="convlab-dispatch-"))
    print(f"{'':28} {'latency (median)':>18} {'throughput':>14}")
    for per_child, label in ((1, "fresh process per task"), (1_000_000, "long-lived process")):
        for name, fn in (("plain Celery", plain), ("convlab", convlab)):
            latency, rate = fn(args.redis, args.tasks, per_child, home)
            print(f"{name + ', ' + label:44} {latency * 1000:8.0f} ms {rate:8.1f} tasks/s", flush=True)


if __name__ == "__main__":
    main()
