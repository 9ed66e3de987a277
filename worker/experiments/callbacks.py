"""The one callback the engine adds to ``fit``: epoch timing and the end-of-epoch hand-off.

It defines no batch hooks, so Keras never calls back into Python between batches (per-batch callbacks
force a host sync per step and would cost throughput).
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
