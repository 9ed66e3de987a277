"""Runner overhead: the same training as bare Keras and through convlab, alternating, in one invocation.

    python bench/overhead.py [--rounds 2] [--epochs 6]

Uses ../shared/data (the CIFAR-10 tarball and the alpha-0.25 ImageNet weights). The convlab side is the
real path: `orchestrator submit train` -> broker -> an already running (warm) worker -> task process ->
storage, timed from the submit command's start to the run's `succeeded` in the database. Both sides
include starting Python, importing TensorFlow, reading the data and building the model: the bare side in
its own process, the convlab side in the task's fresh child process (max_tasks_per_child=1).
Prints each time and the ratio convlab / bare (goal: <= 1.03).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env.update(
        CONVLAB_HOME=str(home),
        CONVLAB_CIFAR10=str(DATA / "cifar-10-python.tar.gz"),
        CONVLAB_WEIGHTS_DIR=str(DATA / "weights"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def bare(epochs: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_keras.py"),
            "--cifar",
            str(DATA / "cifar-10-python.tar.gz"),
            "--weights",
            str(DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"),
            "--epochs",
            str(epochs),
        ],
        check=True,
        env=_env(Path(tempfile.gettempdir())),
        cwd=ROOT,
    )
    return time.perf_counter() - started


def convlab(env: dict[str, str], epochs: int) -> float:
    from contract.settings import load_settings
    from storage import repository as repo
    from storage.db import get_database

    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "submit",
            "train",
            "--regime",
            "imagenet",
            "--profile",
            "quick",
            "--set",
            f"epochs={epochs}",
            "--force",
            "--no-wait",
        ],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    sweep_id = re.search(r"sweep (s-\w+)", out).group(1)  # type: ignore[union-attr]
    db = get_database(load_settings(env))
    while True:
        with db.session(readonly=True) as s:
            (run,) = repo.sweep_runs(s, sweep_id)
        if run.status in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    if run.status != "succeeded":
        raise SystemExit(f"convlab run failed: {run.error}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="convlab-bench-"))
    env = _env(home)
    log = open(home / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(5)  # let the worker come up: the benchmark is about a warm worker
        bares, convlabs = [], []
        for i in range(args.rounds):
            bares.append(bare(args.epochs))
            convlabs.append(convlab(env, args.epochs))
            print(
                f"round {i + 1}: bare {bares[-1]:.1f} s, convlab {convlabs[-1]:.1f} s, "
                f"ratio {convlabs[-1] / bares[-1]:.3f}",
                flush=True,
            )
        print(
            f"total: bare {sum(bares):.1f} s, convlab {sum(convlabs):.1f} s, "
            f"ratio {sum(convlabs) / sum(bares):.3f} (goal <= 1.03)"
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)


if __name__ == "__main__":
    main()
