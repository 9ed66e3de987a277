"""What one ``fit`` call per epoch costs against one ``fit`` call per phase (the loop before 2026-12-03).

    python bench/fit_loop.py [--data ../shared/data] [--images 5000] [--epochs 4] [--rounds 2]

The smoke-sized MobileNet (alpha 0.25, 32x32, random init, batch 32, Adam) on ``--images`` real CIFAR-10
training images and 1,000 validation images, CPU. Each round trains two fresh models in this process,
alternating which goes first: ``fit(shuffle=True, epochs=N)`` once, and ``fit_epochs`` (one call per
epoch on the (seed, epoch) order). Compares the median steady epoch (epochs 2..N, wall time of the whole
epoch with its validation, measured by a callback). Timings only; a quiet machine is assumed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import keras
    import numpy as np

    from worker.experiments.data import load_cifar10
    from worker.experiments.fit_loop import fit_epochs
    from worker.experiments.models import build_model

    data = load_cifar10(args.data / "cifar-10-python.tar.gz")
    x = data.x_train[: args.images].astype(np.float32)
    y = keras.utils.to_categorical(data.y_train[: args.images], 10).astype(np.float32)
    val = (data.x_val[:1000].astype(np.float32), keras.utils.to_categorical(data.y_val[:1000], 10))

    class Times(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._t)

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = build_model(alpha=0.25, input_size=32, weights="none")
        m.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
        return m

    def once() -> list[float]:
        times = Times()
        model().fit(
            x, y, batch_size=32, epochs=args.epochs, validation_data=val, callbacks=[times], verbose=0
        )
        return times.seconds

    def per_epoch() -> list[float]:
        times = Times()
        fit_epochs(
            model(), x, y, batch_size=32, seed=0, start=0, end=args.epochs, validation=val, callbacks=[times]
        )
        return times.seconds

    steady: dict[str, list[float]] = {"one call per phase": [], "one call per epoch": []}
    for r in range(args.rounds):
        order = [("one call per phase", once), ("one call per epoch", per_epoch)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            steady[name] += run()[1:]
    result = {name: statistics.median(v) for name, v in steady.items()}
    result["ratio"] = result["one call per epoch"] / result["one call per phase"]
    print(f"steady epoch ({args.images} images + 1000 val), median s:", file=sys.stderr)
    for name, v in steady.items():
        print(f"  {name}: {statistics.median(v):.3f} (n={len(v)})", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
