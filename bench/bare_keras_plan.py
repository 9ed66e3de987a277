"""The bare-Keras baseline of a plan's trainings: the three regimes of the seed one after the other in one
Python process, as the seed's notebook ran them (no convlab in the loop).

    python bench/bare_keras_plan.py --cifar TARBALL --weights WEIGHTS_FILE [--profile quick]

Same data subset (convlab's tarball reader: Keras cannot read this copy of CIFAR-10 itself), model,
optimizer, loss, metric, batch size, epochs and learning rates as the profile's ``scratch``, ``imagenet``
and ``finetune`` (head phase with the base frozen, then the whole network recompiled at ``tune_lr``);
one ``model.fit`` per phase with validation each epoch. Each model is new, so Keras traces each phase's
step, as a notebook does. Prints the seconds from the start of this script.
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
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    import keras

    from contract.profiles import PROFILES
    from worker.experiments.data import load_cifar10

    p = PROFILES[args.profile]
    data = load_cifar10(args.cifar, train_limit=p["train_limit"], val_limit=p["val_limit"], seed=args.seed)
    x_train, x_val = data.x_train.astype("float32"), data.x_val.astype("float32")
    y_train, y_val = keras.utils.to_categorical(data.y_train, 10), keras.utils.to_categorical(data.y_val, 10)

    def model_with(weights: str | None) -> tuple[keras.Model, keras.Model]:
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        base = keras.applications.MobileNet(
            include_top=False, pooling="avg", weights=weights, alpha=p["alpha"], input_shape=(32, 32, 3)
        )
        outputs = keras.layers.Dense(10, activation="softmax")(base(x))
        return keras.Model(inputs, outputs), base

    def fit(model: keras.Model, lr: float, epochs: int, initial: int = 0) -> float:
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="categorical_crossentropy",
            metrics=["categorical_accuracy"],
        )
        history = model.fit(
            x_train,
            y_train,
            batch_size=p["batch_size"],
            epochs=initial + epochs,
            initial_epoch=initial,
            validation_data=(x_val, y_val),
            verbose=0,
        )
        return float(history.history["val_categorical_accuracy"][-1])

    results = {}
    for regime, weights in (("scratch", None), ("imagenet", args.weights)):
        keras.utils.set_random_seed(args.seed)
        model, _ = model_with(weights)
        results[regime] = fit(model, p["lr"], p["epochs"])
    keras.utils.set_random_seed(args.seed)
    model, base = model_with(args.weights)
    base.trainable = False
    fit(model, p["lr"], p["head_epochs"])
    base.trainable = True
    results["finetune"] = fit(model, p["tune_lr"], p["tune_epochs"], initial=p["head_epochs"])
    accuracies = " ".join(f"{k}={v:.4f}" for k, v in results.items())
    print(f"bare_keras_plan seconds={time.perf_counter() - started:.2f} val_accuracy {accuracies}")


if __name__ == "__main__":
    main()
