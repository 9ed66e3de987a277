"""The ``fit`` loop: one ``model.fit`` call per epoch, on that epoch's order of the training images.

Why not one ``fit(..., shuffle=True)`` over all epochs: after ``keras.utils.set_random_seed`` (which the
engine calls so that runs are reproducible), Keras 3's TensorFlow data adapter draws the same permutation
at every epoch (measured on Keras 3.15 / TF 2.21: a 4-epoch ``fit`` of 8 images fed
``[0, 4, 1, 5, 7, 6, 2, 3]`` four times). Training on one fixed order is not what the seed's notebook
did (it shuffled anew every epoch, unseeded) and has less SGD noise, so the curves would answer another
question. Here the order of 0-based epoch ``e`` is :func:`~worker.experiments.device_loop.epoch_order`
of ``(seed, e)``, the order the JAX device loop uses: it differs from epoch to epoch, and a run resumed
before ``e`` sees the same order as an uninterrupted one.

Each call after the first reuses Keras's compiled train and test functions (they are built once per
``compile``), so the per-epoch call costs the data adapter's setup and the gathered copy of the arrays,
not a trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from worker.experiments.device_loop import epoch_order


def fit_epochs(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    start: int,
    end: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """Train 0-based epochs ``start .. end-1``, each on ``epoch_order(len(x), seed, epoch)``.

    Stops early when a callback sets ``model.stop_training`` (Keras resets it at the start of each
    ``fit``, so it is read here, between the calls).
    """
    for epoch in range(start, end):
        order = epoch_order(len(x), seed=seed, epoch=epoch)
        model.fit(
            x[order],
            y[order],
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=validation,
            callbacks=list(callbacks),
            verbose=0,
        )
        if model.stop_training:
            return
