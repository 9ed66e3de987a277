"""The callbacks the engine adds to ``fit``: epoch timing and the end-of-epoch hand-off, and (when asked)
a batch counter for live progress inside an epoch.

A batch hook normally makes Keras call back synchronously after every step, which forces a host sync per
step and costs throughput. :class:`BatchProgress` declares itself ``async_safe``: Keras then keeps
dispatching batch callbacks on its background thread (as it does with no batch hooks at all), and the hook
only stores three numbers, so the training loop never waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras

# (0-based epoch, logs, epoch seconds, training seconds) -> True to stop training.
EpochEndHandler = Callable[[int, dict[str, Any], float, float], bool]


class EpochEnd(keras.callbacks.Callback):
    """Times each epoch (training part ends when validation begins) and asks ``handler`` whether to stop."""

    def __init__(self, handler: EpochEndHandler) -> None:
        super().__init__()
        self._handler = handler
        self._start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        end = time.perf_counter()
        train_end = self._train_end if self._train_end is not None else end
        if self._handler(epoch, dict(logs or {}), end - self._start, train_end - self._start):
            self.model.stop_training = True


# (1-based epoch, batches done in it, images per second so far in it) -> None; must be cheap.
ProgressHandler = Callable[[int, int, float], None]


class BatchProgress(keras.callbacks.Callback):
    """Reports how many batches of the current epoch are done, for status displays."""

    async_safe = True  # see the module docstring: keeps Keras's asynchronous batch-callback dispatch

    def __init__(self, handler: ProgressHandler, batch_size: int) -> None:
        super().__init__()
        self._handler = handler
        self._batch_size = batch_size
        self._epoch = 0
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        elapsed = time.perf_counter() - self._start
        done = batch + 1
        self._handler(self._epoch, done, done * self._batch_size / elapsed if elapsed > 0 else 0.0)
