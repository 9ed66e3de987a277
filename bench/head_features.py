"""The finetune head phase, plain vs on features computed once (issue 22): seconds per epoch, in one run.

    python bench/head_features.py [--train 3000 --val 500 --head-epochs 3 --alpha 0.25 --rounds 1]
        [--loop fit] [--data ../shared/data]

Each case (plain, features) trains in a fresh process, in alternating order, the engine's own ``train()``
of a ``finetune`` spec on the real CIFAR-10 subset with the real ImageNet weights (alpha 0.25: the one
offline), batch 32, and stops after the head phase. Reported per case: the head phase's wall time from
``train()``'s start (model build, data conversion and, on the features path, the feature pass included;
imports excluded), each head epoch's recorded seconds (the features path counts its feature pass in its
first epoch), and at the end the largest difference between the two paths' per-epoch metrics.
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
# ../shared/data beside the checkout (/work/main), or one level up from a worktree (/work/wt/<name>).
_PLACES = (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")

CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from contract.specs import TrainSpec
from worker.experiments.data import load_cifar10
from worker.experiments.regimes import train
data_dir, loop, features = Path(sys.argv[1]), sys.argv[6], sys.argv[7] == "features"
n_train, n_val, head_epochs, alpha = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data = load_cifar10(data_dir / "cifar-10-python.tar.gz", train_limit=n_train, val_limit=n_val, seed=0)
spec = TrainSpec(regime="finetune", seed=0, alpha=alpha, batch_size=32, lr=1e-3, head_epochs=head_epochs,
                 tune_epochs=1, tune_lr=1e-5, train_limit=n_train, val_limit=n_val)
ended = []
with tempfile.TemporaryDirectory() as folder:
    started = time.perf_counter()
    result = train(spec, data, Path(folder), weights_dir=str(data_dir / "weights"), loop=loop,
                   head_features=features, on_epoch=lambda r: ended.append(time.perf_counter()),
                   should_stop=lambda: len(ended) >= head_epochs)
print(json.dumps({"head_wall": ended[-1] - started, "epochs": [r.seconds for r in result.history],
                  "metrics": [[r.loss, r.accuracy, r.val_loss, r.val_accuracy] for r in result.history]}))
"""


def _data_dir(given: str | None) -> Path:
    for place in [Path(given)] if given else _PLACES:
        if (place / "cifar-10-python.tar.gz").is_file() and (place / "weights").is_dir():
            return place.resolve()
    raise SystemExit(f"no CIFAR-10 tarball and weights/ in {given or ' or '.join(map(str, _PLACES))}")


def _case(path: str, args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as home:
        env["CONVLAB_HOME"] = home
        values = (data_dir, args.train, args.val, args.head_epochs, args.alpha, args.loop, path)
        argv = [str(a) for a in values]
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *argv], env=env, cwd=ROOT, capture_output=True, text=True
        )
    if done.returncode != 0:
        raise SystemExit(f"{path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder with cifar-10-python.tar.gz and weights/")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--loop", default="fit")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    data_dir = _data_dir(args.data)
    walls: dict[str, list[float]] = {}
    later: dict[str, list[float]] = {}
    metrics: dict[str, list[list[float]]] = {}
    for round_ in range(args.rounds):
        for path in ("plain", "features") if round_ % 2 == 0 else ("features", "plain"):
            result = _case(path, args, data_dir)
            epochs, wall = result["epochs"], result["head_wall"]
            assert isinstance(epochs, list) and isinstance(wall, float)
            walls.setdefault(path, []).append(wall)
            later.setdefault(path, []).extend(epochs[1:])
            metrics[path] = result["metrics"]  # type: ignore[assignment]
            shown = " ".join(f"{s:.2f}" for s in epochs)
            print(f"{path:<9} head phase {wall:6.1f} s; epochs (s): {shown}", flush=True)
    plain, features = (statistics.median(walls[p]) for p in ("plain", "features"))
    print(f"head phase wall, median: plain {plain:.1f} s, features {features:.1f} s, {plain / features:.2f}x")
    if later["plain"] and later["features"]:
        a, b = statistics.median(later["plain"]), statistics.median(later["features"])
        print(f"later head epochs, median: plain {a:.2f} s, features {b:.3f} s, {a / b:.0f}x")
    diff = max(
        abs(x - y) / max(abs(y), 1e-12)
        for got, want in zip(metrics["features"], metrics["plain"], strict=True)
        for x, y in zip(got, want, strict=True)
    )
    print(f"largest relative difference of per-epoch loss/accuracy/val_*, features vs plain: {diff:.2e}")


if __name__ == "__main__":
    main()
