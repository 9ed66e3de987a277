"""The ``fit`` loop feeds each epoch its own order, drawn from (seed, epoch), and stops between epochs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from worker.experiments.device_loop import epoch_order
from worker.experiments.fit_loop import fit_epochs

N = 16
SEED = 1


class _Recording(keras.Model):
    """Records the first feature of every training batch it is given (eager, so the values are real)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []

    def train_step(self, data: Any) -> Any:
        x, _ = data
        self.batches.append(np.asarray(x)[:, 0].astype(int).tolist())
        return super().train_step(data)


def _model() -> _Recording:
    inputs = keras.Input((1,))
    model = _Recording(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse", run_eagerly=True)
    return model


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N, dtype=np.float32)[:, None]
    return x, x.copy()


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs: int) -> None:
        super().__init__()
        self._epochs = epochs
        self.ended: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.ended.append(epoch)
        if len(self.ended) >= self._epochs:
            self.model.stop_training = True


def test_every_epoch_gets_the_order_of_its_seed_and_epoch() -> None:
    keras.utils.set_random_seed(SEED)  # as the engine does: this made Keras's own shuffle repeat
    model, (x, y) = _model(), _data()
    fit_epochs(model, x, y, batch_size=N, seed=SEED, start=0, end=4, validation=None, callbacks=[])
    expected = [epoch_order(N, seed=SEED, epoch=e).tolist() for e in range(4)]
    assert model.batches == expected
    assert len({tuple(order) for order in model.batches}) == 4, "an epoch repeated another's order"


def test_a_resumed_loop_sees_the_orders_of_an_uninterrupted_one() -> None:
    model, (x, y) = _model(), _data()
    fit_epochs(model, x, y, batch_size=N, seed=SEED, start=2, end=4, validation=None, callbacks=[])
    assert model.batches == [epoch_order(N, seed=SEED, epoch=e).tolist() for e in (2, 3)]


def test_stop_training_ends_the_loop_between_epochs() -> None:
    model, (x, y) = _model(), _data()
    stop = _StopAfter(2)
    fit_epochs(model, x, y, batch_size=8, seed=SEED, start=0, end=5, validation=None, callbacks=[stop])
    assert stop.ended == [0, 1]
    assert len(model.batches) == 2 * 2  # two epochs of two batches
