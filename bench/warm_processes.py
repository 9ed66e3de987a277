"""A plan end to end with warm task processes against one fresh process per task, alternating in one run.

    PYTHONPATH=$PWD python bench/warm_processes.py [--profile smoke] [--rounds 2] [--before REV]
        [--slots 1 --slots 2] [--worker-before] [--no-submit]

``before``: the code at ``REV`` (default ``ad79799``, the last commit with ``max_tasks_per_child=1``),
exported with ``git archive`` into a temporary folder; ``after``: this checkout. Each case runs in a fresh
``$CONVLAB_HOME`` (embedded broker and SQLite) whose decoded CIFAR-10 cache is a hard link to one decoded
once beforehand (as on a machine that ran a plan before), with the real data of ../shared/data:

- ``submit``: ``orchestrator submit all --profile P``, as a user types it (it starts its local worker,
  1 slot, and waits for the sweep): the command's wall time;
- ``worker xN`` (with ``--slots``, after's code; ``--worker-before``: also x1 of before's code):
  ``orchestrator worker --slots N`` started first and ready, then ``submit all --profile P --no-wait``:
  submit to the sweep's last end, from the database.

Cases alternate within each round (before, after, then the slot cases), so a change in the machine's load
touches both sides. Per case it prints the wall, and for the worker cases the per-task rows
(bench/task_overhead.py's ``real_rows``). Timings only; the machine should be otherwise quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from task_overhead import DATA, real_rows, submit_and_wait, wait_ready  # noqa: E402


def _env(home: Path, code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_") and k != "PYTHONPATH"}
    env.update(
        CONVLAB_HOME=str(home),
        CONVLAB_CIFAR10=str(DATA / "cifar-10-python.tar.gz"),
        CONVLAB_WEIGHTS_DIR=str(DATA / "weights"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(code),
    )
    return env


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev``, as files (no git worktree: nothing of this repository changes)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def decoded_cache(code: Path, scratch: Path) -> Path:
    """Decode CIFAR-10 once, into the cache layout every case's home gets a hard link of."""
    home = scratch / "primer"
    decode = (
        "from contract.settings import load_settings; from worker.experiments.data import load_cifar10; "
        "s = load_settings(); load_cifar10(s.cifar10_path, cache_dir=s.home / 'cache')"
    )
    subprocess.run([sys.executable, "-c", decode], env=_env(home, code), cwd=code, check=True)
    return next((home / "cache").glob("cifar10-*.npz"))


def fresh_home(scratch: Path, name: str, npz: Path) -> Path:
    home = scratch / name
    (home / "cache").mkdir(parents=True)
    os.link(npz, home / "cache" / npz.name)
    return home


def user_submit(home: Path, code: Path, profile: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", "all", "--profile", profile],
        env=_env(home, code), cwd=code, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:  # submit exits non-zero when a run of the sweep did not succeed
        raise SystemExit(
            f"submit failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return wall


def worker_submit(home: Path, code: Path, profile: str, slots: int) -> dict[str, Any]:
    env = _env(home, code)
    log_path = home / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "worker", "--slots", str(slots)],
            env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(log_path)
            time.sleep(8)  # the task processes import Keras after "ready": let them, as a running worker has
            sweep_id, wall = submit_and_wait(env, ["all", "--profile", profile])
            rows = real_rows(env, sweep_id)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=120)
            except subprocess.TimeoutExpired:  # seen once with 2 slots on the embedded broker: say so
                print(f"    worker x{slots} did not stop within 120 s of SIGTERM; killed", flush=True)
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
    recycled = [
        line for line in log_path.read_text(errors="replace").splitlines() if "recycled after" in line
    ]
    return {"wall": wall, "rows": rows, "recycled": recycled}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default="ad79799")
    parser.add_argument("--no-submit", action="store_true", help="skip the `submit` cases")
    parser.add_argument("--worker-before", action="store_true", help="also a 1-slot worker of before's code")
    parser.add_argument(
        "--slots", type=int, action="append", default=[], help="also time a worker with N slots"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="convlab-warm-"))
    try:
        before = export(args.before, scratch / "before-code")
        npz = decoded_cache(ROOT, scratch)
        walls: dict[str, list[float]] = {}
        for round_ in range(1, args.rounds + 1):
            cases: list[tuple[str, Path, int | None]] = []
            if not args.no_submit:
                cases += [("submit, before", before, None), ("submit, after", ROOT, None)]
            if args.worker_before:
                cases.append(("worker x1, before", before, 1))
            cases += [(f"worker x{n}, after", ROOT, n) for n in args.slots]
            for label, code, slots in cases:
                home = fresh_home(scratch, f"r{round_}-{label.replace(' ', '').replace(',', '-')}", npz)
                load = os.getloadavg()[0]
                if slots is None:
                    wall = user_submit(home, code, args.profile)
                    print(f"round {round_}  {label:20s} {wall:6.1f} s   (load {load:.1f})", flush=True)
                else:
                    found = worker_submit(home, code, args.profile, slots)
                    wall = found["wall"]
                    print(f"round {round_}  {label:20s} {wall:6.1f} s   (load {load:.1f})", flush=True)
                    for row in found["rows"]:
                        gap = "-" if row["gap"] is None else f"{row['gap']:.1f}"
                        to1 = f"{row['to_epoch1']:.1f}" if "to_epoch1" in row else ""
                        task = f"{row['run']:20s} gap {gap:>5s}  task {row['task']:5.1f}"
                        print(f"    {task}  to epoch 1 {to1:>5s}  epochs {row.get('epochs', '')}")
                    for line in found["recycled"]:
                        print("    " + line.split("] ", 1)[-1])
                walls.setdefault(label, []).append(wall)
                shutil.rmtree(home, ignore_errors=True)
        print(
            "\nwall, per case: "
            + "; ".join(f"{k}: {', '.join(f'{w:.1f}' for w in v)}" for k, v in walls.items())
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
