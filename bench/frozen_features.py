"""What the frozen ImageNet base gives the head, at 32x32 and at larger inputs (the explain plan's why).

For each input size: the features the head of the `finetune` regime sees while the base is frozen
(BatchNorm in inference mode, as Keras runs a non-trainable base), how many of them vary at all across
CIFAR-10 images, and the validation accuracy of the best linear classifier on them (closed-form ridge
regression on one-hot labels: an upper bound for what a Dense(10) head can learn, without training).

    python bench/frozen_features.py --cifar ../shared/data/cifar-10-python.tar.gz \
        --weights-dir ../shared/data/weights --sizes 32 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cifar", required=True)
    parser.add_argument("--weights-dir", required=True)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--train-limit", type=int, default=4_000)
    parser.add_argument("--val-limit", type=int, default=1_000)
    args = parser.parse_args()

    import keras
    import numpy as np

    from worker.experiments.data import load_cifar10
    from worker.experiments.models import build_model

    data = load_cifar10(args.cifar, train_limit=args.train_limit, val_limit=args.val_limit, seed=0)
    for size in args.sizes:
        model = build_model(
            alpha=args.alpha, input_size=size, weights="imagenet", weights_dir=args.weights_dir
        )
        features = keras.Model(model.input, model.get_layer("classifier").input)
        train = features.predict(data.x_train.astype("float32"), batch_size=64, verbose=0)
        val = features.predict(data.x_val.astype("float32"), batch_size=64, verbose=0)
        constant = int((train.std(axis=0) < 1e-3).sum())
        x = np.c_[train, np.ones(len(train))]
        w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ np.eye(10)[data.y_train])
        accuracy = float(((np.c_[val, np.ones(len(val))] @ w).argmax(axis=1) == data.y_val).mean())
        print(
            f"input {size}x{size}: {constant} of {train.shape[1]} features constant over "
            f"{len(train):,} images; linear probe validation accuracy {100 * accuracy:.1f} %"
        )


if __name__ == "__main__":
    main()
