"""The device loop against Keras's fit, on the engine's own train(): seconds per epoch, in one run.

    python bench/train_loop.py --cifar ../shared/data/cifar-10-python.tar.gz [--backends tensorflow jax]
        [--train 5000 --val 1000 --epochs 3 --alpha 0.25 --rounds 1]

Each (backend, loop) trains in a fresh process (the backend is fixed at import), in alternating order,
a scratch MobileNet on a class-balanced subset at batch 32. Reported per case: the first epoch's seconds
(import excluded; build, compile and one epoch included) and the median of the later epochs' seconds,
then the ratio device/fit of the later epochs per backend. Run it on an otherwise idle machine, or at
least compare only ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from contract.specs import TrainSpec
from worker.experiments.data import load_cifar10
from worker.experiments.regimes import train
cifar, loop = sys.argv[1], sys.argv[6]
n_train, n_val, epochs, alpha = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data = load_cifar10(cifar, train_limit=n_train, val_limit=n_val, seed=0)
spec = TrainSpec(regime="scratch", seed=0, alpha=alpha, batch_size=32, epochs=epochs, lr=1e-4,
                 train_limit=n_train, val_limit=n_val)
with tempfile.TemporaryDirectory() as folder:
    started = time.perf_counter()
    result = train(spec, data, Path(folder), loop=loop)
    total = time.perf_counter() - started
print(json.dumps({"total": total, "epochs": [r.seconds for r in result.history],
                  "val_accuracy": [r.val_accuracy for r in result.history]}))
"""


def _case(backend: str, loop: str, args: argparse.Namespace) -> dict[str, object]:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as home:
        env["CONVLAB_HOME"] = home
        argv = [str(a) for a in (args.cifar, args.train, args.val, args.epochs, args.alpha, loop)]
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *argv], env=env, cwd=ROOT, capture_output=True, text=True
        )
    if done.returncode != 0:
        raise SystemExit(f"{backend}/{loop} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", required=True)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    later: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for backend in args.backends:
            loops = ("fit", "device") if round_ % 2 == 0 else ("device", "fit")
            for loop in loops:
                result = _case(backend, loop, args)
                epochs = result["epochs"]
                assert isinstance(epochs, list)
                later.setdefault((backend, loop), []).extend(epochs[1:])
                print(
                    f"{backend:<10} {loop:<6} first epoch {epochs[0]:6.1f} s, later "
                    f"{statistics.median(epochs[1:]):6.1f} s, val_acc {result['val_accuracy']}",
                    flush=True,
                )
    for backend in args.backends:
        ratio = statistics.median(later[(backend, "device")]) / statistics.median(later[(backend, "fit")])
        print(f"{backend}: later epochs, device / fit = {ratio:.2f}")


if __name__ == "__main__":
    main()
