"""The bare-Keras baseline for bench/overhead.py: one training, no convlab in the loop.

Same data subset (read with convlab's tarball reader, the only convlab piece: Keras cannot read this
copy of CIFAR-10 itself), same model, optimizer, loss, metric, batch size and epochs as the `quick`
profile's `imagenet` regime; one ``model.fit`` with validation each epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cifar", required=True)
    parser.add_argument("--weights", required=True, help="path of mobilenet_2_5_224_tf_no_top.h5")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--val-limit", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    import keras

    from worker.experiments.data import load_cifar10

    keras.utils.set_random_seed(args.seed)
    data = load_cifar10(args.cifar, train_limit=args.train_limit, val_limit=args.val_limit, seed=args.seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNet(
        include_top=False, pooling="avg", weights=args.weights, alpha=0.25, input_shape=(32, 32, 3)
    )
    outputs = keras.layers.Dense(10, activation="softmax")(base(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="categorical_crossentropy",
        metrics=["categorical_accuracy"],
    )
    y_train = keras.utils.to_categorical(data.y_train, 10)
    y_val = keras.utils.to_categorical(data.y_val, 10)
    history = model.fit(
        data.x_train.astype("float32"),
        y_train,
        batch_size=32,
        epochs=args.epochs,
        validation_data=(data.x_val.astype("float32"), y_val),
        verbose=0,
    )
    print(
        f"bare_keras seconds={time.perf_counter() - started:.2f} "
        f"val_accuracy={history.history['val_categorical_accuracy'][-1]:.4f}"
    )


if __name__ == "__main__":
    main()
