"""What the object store costs, and how long a lost host's run waits, on one machine, in one invocation.

    python bench/several_hosts.py [--data ../shared/data] [--epochs 10] [--profile quick]
        [--skip-plan] [--skip-loss]

Starts its own S3 server (SeaweedFS ``weed mini``, as the tests do), a fresh PostgreSQL database and a
Redis database (``--redis``), and measures:

1. **One epoch's commit**, the store's part: Keras's checkpoint pair of a real MobileNet (alpha 0.25,
   Dense(10) head, Adam state), stored from its scratch path (``store_scratch`` of the model and the state
   file) and the previous epoch's pair deleted, as ``worker/runners.py`` does after the database commit;
   folder store vs S3, ``--epochs`` commits each, median and max.
2. **A plan end to end** (``--profile``, default ``quick``: 3 trainings, 3 visualizations, the report) on
   Redis + PostgreSQL with one worker of one slot, the artifacts in the folder store vs in S3: submit to
   the last run's end.
3. **A host's loss to its run's next committed epoch on another host**: a training (S3) on worker A; after
   its first epoch's commit, A is SIGKILLed and its home deleted; worker B (already running, another home)
   takes the run over once the lease has expired. Time from the kill to the next epoch row, with the
   default 60 s lease and with a 4 s lease.

Timings only, no assertions; the machine should be otherwise quiet. JSON on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3server import S3Server  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# 1. One epoch's commit, the store's part.


def _checkpoint_pair(folder: Path, epoch: int) -> None:
    import keras

    from contract.records import EpochRecord
    from worker.experiments.checkpoints import CheckpointState, save_checkpoint
    from worker.experiments.models import build_model

    model = build_model(alpha=0.25, input_size=32, weights="none")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    record = EpochRecord(
        epoch=epoch, phase="train", loss=1.0, accuracy=0.1, val_loss=1.0, val_accuracy=0.1,
        lr=1e-3, seconds=1.0, images_per_second=1.0,
    )  # fmt: skip
    state = CheckpointState("bench", epoch, "train", epoch * 10, 0, (record,))
    save_checkpoint(folder, model, state)


def commit_costs(server: S3Server, home: Path, epochs: int) -> dict[str, Any]:
    from storage.artifacts import ArtifactStore
    from storage.folder_store import FolderStore
    from storage.object_store import ObjectStore
    from worker.experiments.checkpoints import model_file_name, state_file_name

    template = home / "template"
    _checkpoint_pair(template, 1)
    model_src, state_src = template / model_file_name(1), template / state_file_name(1)
    stores: dict[str, ArtifactStore] = {
        "folder": FolderStore(home / "artifacts"),
        "s3": ObjectStore(
            server.url(f"bench-{uuid.uuid4().hex[:6]}"),
            cache_dir=home / "cache",
            scratch_dir=home / "scratch",
            cache_limit_bytes=1 << 30,
            options=server.options(),
        ),
    }
    result: dict[str, Any] = {
        "model_bytes": model_src.stat().st_size,
        "state_bytes": state_src.stat().st_size,
    }
    for name, store in stores.items():
        times = []
        previous: list[str] = []
        for epoch in range(1, epochs + 1):
            folder = "runs/r-bench/attempt-1/checkpoint"
            keys = [f"{folder}/{model_file_name(epoch)}", f"{folder}/{state_file_name(epoch)}"]
            for key, src in zip(keys, (model_src, state_src), strict=True):
                target = store.scratch_path(key)
                shutil.copyfile(src, target)  # what Keras writes, outside the timing
                # A distinct body per epoch, as a real epoch's weights are (write once, no same-bytes reuse).
                with open(target, "ab") as fh:
                    fh.write(f"{epoch}".encode())
            started = time.perf_counter()
            for key in keys:
                store.store_scratch(key)
            for key in previous:
                store.delete(key)
            times.append(time.perf_counter() - started)
            previous = keys
        result[name] = {"median_s": statistics.median(times), "max_s": max(times), "commits": epochs}
    result["ratio"] = result["s3"]["median_s"] / result["folder"]["median_s"]
    return result


# 2 and 3: real processes on Redis + PostgreSQL.


class Lab:
    def __init__(self, tmp: Path, data: Path, redis_url: str, server: S3Server) -> None:
        self.tmp, self.data, self.redis_url, self.server = tmp, data, redis_url, server
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, home: Path, database: str, *, s3: bool, lease: float) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVLAB_", "AWS_"))}
        env.update(
            CONVLAB_HOME=str(home),
            CONVLAB_DATABASE_URL=database,
            CONVLAB_BROKER_URL=self.redis_url,
            CONVLAB_CIFAR10=str(self.data / "cifar-10-python.tar.gz"),
            CONVLAB_WEIGHTS_DIR=str(self.data / "weights"),
            CONVLAB_LEASE_SECONDS=str(lease),
            CONVLAB_HEARTBEAT_SECONDS=str(min(10.0, lease / 4)),
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=str(ROOT),
        )
        if s3:
            env.update(
                self.server.env(), CONVLAB_ARTIFACTS_URL=self.server.url(f"lab-{uuid.uuid4().hex[:6]}")
            )
        return env

    def database(self) -> str:
        import sqlalchemy as sa

        name = f"convlab_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"{POSTGRES}/{name}"

    def orchestrator(self, env: dict[str, str], *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"orchestrator {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def worker(self, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        Path(env["CONVLAB_HOME"]).mkdir(parents=True, exist_ok=True)
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "worker", "--name", f"{name}@bench"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)


def _rows(env: dict[str, str], sql: str, **params: Any) -> list[Any]:
    import sqlalchemy as sa

    engine = sa.create_engine(env["CONVLAB_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def plan_end_to_end(lab: Lab, *, s3: bool, profile: str) -> dict[str, Any]:
    home = lab.tmp / f"plan-{'s3' if s3 else 'folder'}"
    env = lab.env(home, lab.database(), s3=s3, lease=60)
    home.mkdir(parents=True)
    proc = lab.worker(env, f"plan-{'s3' if s3 else 'folder'}")
    time.sleep(8)  # the worker's start is not the plan's
    started = time.monotonic()
    out = lab.orchestrator(env, "submit", "all", "--profile", profile, "--no-wait")
    sweep = out.split("sweep ")[1].split()[0]

    def ended() -> bool:
        rows = _rows(env, "select status from runs where sweep_id = :s", s=sweep)
        return bool(rows) and all(r[0] in ("succeeded", "failed", "cancelled") for r in rows)

    _wait(ended, 3600, f"the {profile} plan")
    seconds = time.monotonic() - started
    statuses = [r[0] for r in _rows(env, "select status from runs where sweep_id = :s", s=sweep)]
    lab.stop(proc)
    return {"profile": profile, "seconds": seconds, "statuses": statuses}


def loss_to_next_epoch(lab: Lab, *, lease: float) -> dict[str, Any]:
    database = lab.database()
    env_a = lab.env(lab.tmp / f"loss{lease:g}-a", database, s3=True, lease=lease)
    env_b = {**env_a, "CONVLAB_HOME": str(lab.tmp / f"loss{lease:g}-b")}
    submit_env = {**env_a, "CONVLAB_HOME": str(lab.tmp / f"loss{lease:g}-laptop")}
    Path(submit_env["CONVLAB_HOME"]).mkdir(parents=True)
    a = lab.worker(env_a, f"loss{lease:g}-a")
    time.sleep(5)
    out = lab.orchestrator(
        submit_env, "submit", "train", "--regime", "imagenet", "--profile", "smoke", "--no-wait",
        "--set", "epochs=6", "--set", "train_limit=2000",
    )  # fmt: skip
    sweep = out.split("sweep ")[1].split()[0]
    (run_id,) = [r[0] for r in _rows(submit_env, "select id from runs where sweep_id = :s", s=sweep)]
    _wait(lambda: _rows(env_a, "select 1 from epoch_metrics where run_id = :r", r=run_id), 600, "epoch 1")
    b = lab.worker(env_b, f"loss{lease:g}-b")
    time.sleep(8)  # B is up and idle before A is lost: the wait measured is the lease's, not B's start
    killed = time.time()
    lab.stop(a)
    shutil.rmtree(env_a["CONVLAB_HOME"])
    committed = len(_rows(env_a, "select 1 from epoch_metrics where run_id = :r", r=run_id))

    def next_epoch() -> float | None:
        rows = _rows(
            env_a,
            "select recorded_at from epoch_metrics where run_id = :r and epoch = :e",
            r=run_id,
            e=committed + 1,
        )
        return rows[0][0].timestamp() if rows else None

    at = _wait(next_epoch, 600, "the next epoch on B")
    claimed = _rows(env_a, "select worker from runs where id = :r", r=run_id)[0][0]
    lab.stop(b)
    return {
        "lease_s": lease,
        "kill_to_next_epoch_s": at - killed,
        "resumed_after_epoch": committed,
        "worker": claimed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--profile", default="quick", help="the plan measured end to end")
    parser.add_argument("--skip-plan", action="store_true")
    parser.add_argument("--skip-loss", action="store_true")
    args = parser.parse_args()
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="convlab-bench-hosts-") as tmp_name:
        tmp = Path(tmp_name)
        server = S3Server(tmp / "s3")
        server.start()
        lab = Lab(tmp, args.data.resolve(), args.redis, server)
        try:
            results["commit"] = commit_costs(server, tmp / "commit", args.epochs)
            c = results["commit"]
            _say(
                f"epoch commit, store part ({c['model_bytes'] / 1e6:.1f} MB model): folder "
                f"{c['folder']['median_s'] * 1e3:.1f} ms, S3 {c['s3']['median_s'] * 1e3:.1f} ms "
                f"(x{c['ratio']:.1f}), max {c['s3']['max_s'] * 1e3:.1f} ms"
            )
            if not args.skip_plan:
                results["plan"] = {
                    name: plan_end_to_end(lab, s3=name == "s3", profile=args.profile)
                    for name in ("folder", "s3")
                }
                p = results["plan"]
                _say(
                    f"{args.profile} plan end to end: folder {p['folder']['seconds']:.1f} s, "
                    f"S3 {p['s3']['seconds']:.1f} s"
                )
            if not args.skip_loss:
                results["loss"] = [loss_to_next_epoch(lab, lease=lease) for lease in (60.0, 4.0)]
                for row in results["loss"]:
                    _say(
                        f"lease {row['lease_s']:g} s: host lost -> next epoch on B after "
                        f"{row['kill_to_next_epoch_s']:.1f} s"
                    )
        finally:
            lab.close()
            server.stop()
            redis.Redis.from_url(args.redis).flushdb()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
