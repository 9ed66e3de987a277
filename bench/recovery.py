"""How long from a worker's death to its run running again? Run by hand:

    python bench/recovery.py --lease 60          # the default lease
    python bench/recovery.py --lease 4 --heartbeat 1

Starts an isolated embedded-default stack (SQLite + filesystem broker) on tiny synthetic data, submits a
smoke training, SIGKILLs the whole worker (main process and task process) once epoch 1 is recorded, and
starts a second worker at once. Prints the seconds from the kill until the run is claimed again and until
its next epoch is recorded. ``--lost-message`` instead kills a worker that has taken the run's message but
not claimed it (its task processes are SIGSTOPped) and measures until the run is claimed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.datagen import write_fake_imagenet_weights, write_tiny_cifar10  # noqa: E402
from tests.integration.harness import Stack, pool_processes, run_state, wait_for  # noqa: E402


def _stack(home: Path, lease: float, heartbeat: float) -> Stack:
    data = home / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env.update(
        CONVLAB_HOME=str(home),
        CONVLAB_CIFAR10=str(write_tiny_cifar10(data, n_train=200, n_test=100, as_tar=True)),
        CONVLAB_WEIGHTS_DIR=str(write_fake_imagenet_weights(data / "weights", alpha=0.25)),
        CONVLAB_LEASE_SECONDS=str(lease),
        CONVLAB_HEARTBEAT_SECONDS=str(heartbeat),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return Stack(home=home, env=env)


def _submit(stack: Stack) -> str:
    out = stack.orchestrator(
        "submit",
        "train",
        "--regime",
        "scratch",
        "--profile",
        "smoke",
        "--set",
        "epochs=30",
        "--no-wait",
        check=True,
    ).stdout
    sweep = re.search(r"sweep (s-\w+)", out).group(1)  # type: ignore[union-attr]
    with stack.db().session(readonly=True) as s:
        from storage import repository as repo

        return repo.sweep_runs(s, sweep)[0].id


def measure(lease: float, heartbeat: float, lost_message: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = _stack(Path(tmp), lease, heartbeat)
        try:
            db = stack.db()
            w1 = stack.start_worker("w1")
            if lost_message:
                wait_for(lambda: "ready" in stack.log_of("w1"), timeout=120, what="w1 ready")
                for pid in pool_processes(w1.pid):
                    os.kill(pid, signal.SIGSTOP)
            run_id = _submit(stack)
            if lost_message:
                wait_for(lambda: _received(stack, run_id), timeout=60, what="w1 to take the message")
                epoch_before = 0
            else:
                wait_for(lambda: run_state(db, run_id)["last_epoch"] >= 1, timeout=300, what="epoch 1")
                epoch_before = run_state(db, run_id)["last_epoch"]
            os.killpg(w1.pid, signal.SIGKILL)
            killed = time.monotonic()
            stack.start_worker("w2")
            wait_for(
                lambda: run_state(db, run_id)["worker"] == "w2@test", timeout=lease * 3 + 120, what="takeover"
            )
            claimed = time.monotonic() - killed
            wait_for(
                lambda: run_state(db, run_id)["last_epoch"] > epoch_before, timeout=300, what="the next epoch"
            )
            next_epoch = time.monotonic() - killed
            what = "message lost with its worker" if lost_message else "worker SIGKILLed mid-training"
            print(
                f"{what}, lease {lease:g} s, heartbeat {heartbeat:g} s: claimed again after {claimed:.1f} s, "
                f"next epoch recorded after {next_epoch:.1f} s"
            )
        finally:
            stack.stop_all()


def _received(stack: Stack, run_id: str) -> bool:
    from storage import repository as repo

    with stack.db().session(readonly=True) as s:
        return repo.get_run(s, run_id).received_by is not None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--lost-message", action="store_true")
    args = parser.parse_args()
    measure(args.lease, args.heartbeat, args.lost_message)


if __name__ == "__main__":
    main()
