"""What does live progress inside an epoch cost? Run by hand:

    python bench/progress_overhead.py [--cifar ../shared/data/cifar-10-python.tar.gz] [--rounds 3]

Trains the same short `scratch` run (alpha 0.25, a class-balanced subset) in one process, alternately
with and without the engine's batch-progress callback, and prints the training images/s of each epoch
after the first (which traces the graph) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.specs import TrainSpec  # noqa: E402
from worker.experiments.data import load_cifar10  # noqa: E402
from worker.experiments.regimes import train  # noqa: E402


def seen_by(seen: list[int]):  # type: ignore[no-untyped-def]
    return lambda epoch, batches, rate: seen.append(batches)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cifar", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar-10-python.tar.gz")
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = TrainSpec(
        regime="scratch", seed=0, alpha=0.25, train_limit=args.images, val_limit=1000, epochs=args.epochs
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = load_cifar10(
            args.cifar, train_limit=args.images, val_limit=1000, seed=0, cache_dir=Path(tmp) / "cache"
        )
        rates: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for with_progress in (False, True):
                seen: list[int] = []
                result = train(
                    spec,
                    data,
                    Path(tmp) / f"r{round_}-{with_progress}",
                    on_progress=seen_by(seen) if with_progress else None,
                )
                rates[with_progress] += [r.images_per_second for r in result.history[1:]]
                if with_progress:
                    assert seen, "the progress callback was never called"
        base, live = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"without progress: {base:.0f} images/s; with: {live:.0f} images/s; ratio {live / base:.3f}")
        print(f"  without: {[round(r) for r in rates[False]]}\n  with:    {[round(r) for r in rates[True]]}")


if __name__ == "__main__":
    main()
