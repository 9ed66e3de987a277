"""A plan's three trainings through convlab against the same three in one bare-Keras process, alternating.

    PYTHONPATH=$PWD python bench/plan_vs_bare.py [--profile quick] [--rounds 1]

Issue 22's second goal: ``submit`` of the ``scratch``, ``imagenet`` and ``finetune`` trainings of a profile
on a warm worker (an ``orchestrator worker``, 1 slot, started and ready before the clock starts) against
``bench/bare_keras_plan.py``, which trains the same three with the same settings one after the other in
one fresh Python process, as the seed's notebook did. The convlab side is timed from the first
``submit train`` to the last run's ``succeeded`` in the database; the bare side from its process's start
to its end (imports and data included on both sides). ``--force`` each round: nothing is reused from
an earlier round's results. Uses ../shared/data. Timings only; the machine should be otherwise quiet.
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
sys.path.insert(0, str(ROOT / "bench"))

from overhead import DATA, _env  # noqa: E402
from task_overhead import wait_ready  # noqa: E402

REGIMES = ("scratch", "imagenet", "finetune")


def bare(profile: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_keras_plan.py"),
            "--cifar",
            str(DATA / "cifar-10-python.tar.gz"),
            "--weights",
            str(DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"),
            "--profile",
            profile,
        ],
        check=True,
        env=_env(Path(tempfile.gettempdir())),
        cwd=ROOT,
    )
    return time.perf_counter() - started


def convlab(env: dict[str, str], profile: str) -> float:
    from contract.settings import load_settings
    from storage import repository as repo
    from storage.db import get_database

    started = time.perf_counter()
    sweeps = []
    for regime in REGIMES:
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "submit", "train", "--regime", regime]
            + ["--profile", profile, "--force", "--no-wait"],
            check=True,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
        sweeps.append(re.search(r"sweep (s-\w+)", out).group(1))  # type: ignore[union-attr]
    db = get_database(load_settings(env))
    while True:
        with db.session(readonly=True) as s:
            runs = [run for sweep in sweeps for run in repo.sweep_runs(s, sweep)]
        if all(run.status in ("succeeded", "failed") for run in runs):
            break
        time.sleep(0.2)
    failed = [run for run in runs if run.status != "succeeded"]
    if failed:
        raise SystemExit(f"convlab run failed: {failed[0].error}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--rounds", type=int, default=1)
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
        wait_ready(home / "worker.log")
        bares, convlabs = [], []
        for i in range(args.rounds):
            bares.append(bare(args.profile))
            convlabs.append(convlab(env, args.profile))
            print(
                f"round {i + 1}: bare {bares[-1]:.1f} s, convlab {convlabs[-1]:.1f} s, "
                f"ratio {convlabs[-1] / bares[-1]:.3f}",
                flush=True,
            )
        print(
            f"total: bare {sum(bares):.1f} s, convlab {sum(convlabs):.1f} s, "
            f"ratio {sum(convlabs) / sum(bares):.3f} (goal <= 1.0); worker log: {home / 'worker.log'}"
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)


if __name__ == "__main__":
    main()
