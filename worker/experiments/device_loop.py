"""The training loop of ``CONVLAB_TRAIN_LOOP=device`` (and of ``auto`` on a GPU): an epoch as a few
compiled multi-step calls.

Why: at the seed's batch of 32 a GPU finishes a MobileNet step faster than Python can dispatch the next
one, so ``model.fit`` (one jitted call per batch, with the batch copied from the host each time) leaves
it mostly idle. Keras's own ``steps_per_execution`` does not help on JAX: its JAX trainer still calls
the one-step function once per batch from Python (``JAXTrainer._make_function``).

On the JAX backend (:class:`JaxEpochLoop`) the run's training and validation arrays are copied to the
accelerator once; an epoch is ``ceil(steps / chunk_steps)`` calls of one ``jax.jit``-compiled function
that runs ``chunk_steps`` training steps in a ``lax.scan``, each step gathering its batch on the device
by index. The step itself is Keras's own ``model.train_step`` (the stateless JAX train step ``fit`` uses:
same loss, Adam update, BatchNorm statistics, loss tracker and metrics), and validation is
``model.test_step`` in the same way, so the per-epoch ``loss``/``accuracy``/``val_loss``/``val_accuracy``
are computed exactly as ``fit`` computes them (batch-size-weighted mean loss, accuracy over every image,
the last partial batch included). Between calls the host only waits for the previous call and reports
progress; the model's variables are written back at the end of each epoch, where checkpoints are saved.

On the TensorFlow backend Keras's ``steps_per_execution`` does loop on the device (a ``tf.while_loop``
in its TF trainer), so there the device loop is ``fit`` compiled with ``steps_per_execution``: see
:func:`steps_per_execution`.

Shuffling: the order of epoch ``e`` is a permutation drawn from ``(seed, e)`` on the host
(:func:`epoch_order`, which the ``fit`` loop uses too), so it is the same whether or not the run was
interrupted before ``e``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import keras
import numpy as np

# Steps per compiled call. 128 steps of batch 32 are ~4k images: on a GPU a fraction of a second, so
# progress and cancellation stay responsive; on a CPU a few seconds. Larger chunks save little more: the
# dispatch cost per call is paid once per 128 steps already.
CHUNK_STEPS = 128

_CHUNKS_ATTRIBUTE = "_convlab_jax_chunks"

# (batches done in the epoch, images per second so far) -> None.
ChunkHandler = Callable[[int, float], None]


def has_accelerator() -> bool:
    """Whether the active Keras backend computes on a GPU/TPU (imports the backend: task processes only)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def resolve_loop(loop: str) -> str:
    """``auto`` -> ``device`` where there is an accelerator, ``fit`` on a CPU-only machine.

    Why not the device loop on a CPU: measured there (bench/train_loop.py, 2 cores) it buys nothing on
    TensorFlow (later epochs 1.04x fit's time, a first epoch 5 s longer to trace the loop) and costs 2.3x on
    JAX, whose CPU backend runs a rolled loop of training steps far slower than the same steps one call
    at a time. ``device`` and ``fit`` are taken as they are (``device`` on a CPU: for tests and benchmarks).
    """
    if loop == "auto":
        return "device" if has_accelerator() else "fit"
    return loop


def uses_scan(loop: str) -> bool:
    """Whether ``loop`` runs :class:`JaxEpochLoop` on the active backend (else it runs ``model.fit``)."""
    return resolve_loop(loop) == "device" and keras.backend.backend() == "jax"


def steps_per_execution(loop: str) -> int:
    """What to compile a ``fit``-trained model with: ``CHUNK_STEPS`` for the device loop on TensorFlow."""
    return CHUNK_STEPS if resolve_loop(loop) == "device" and keras.backend.backend() == "tensorflow" else 1


def describe_loop(loop: str) -> str:
    """The loop that runs on the active backend, in words, for a run's provenance."""
    chosen = " (auto: an accelerator)" if loop == "auto" else ""
    if uses_scan(loop):
        return f"device{chosen}: JAX lax.scan, {CHUNK_STEPS} steps per call, data on the accelerator"
    if steps_per_execution(loop) > 1:
        return f"device{chosen}: Keras fit, steps_per_execution={CHUNK_STEPS} (a tf.while_loop)"
    chosen = " (auto: no accelerator)" if loop == "auto" else ""
    return f"fit{chosen}: Keras model.fit, one call per batch"


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of the ``n`` training images in 0-based ``epoch``: a function of (seed, epoch) only."""
    if not shuffle:
        return np.arange(n, dtype=np.int32)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def _chunks(order: np.ndarray, batch_size: int, chunk_steps: int) -> Iterator[np.ndarray]:
    """Index arrays of shape (steps, batch): full batches ``chunk_steps`` at a time, then the partial one.

    At most three shapes per epoch (full chunk, last chunk, partial batch), so at most three compiled
    programs per run, whatever the data size.
    """
    full = len(order) // batch_size
    rows = order[: full * batch_size].reshape(full, batch_size)
    for start in range(0, full, chunk_steps):
        yield rows[start : start + chunk_steps]
    if len(order) % batch_size:
        yield order[full * batch_size :][None, :]


class JaxEpochLoop:
    """Trains and validates a compiled Keras model on the JAX backend, one epoch per :meth:`run_epoch`."""

    def __init__(
        self,
        model: keras.Model,
        x_train: np.ndarray,
        y_train: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray] | None,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        chunk_steps: int = CHUNK_STEPS,
    ) -> None:
        import jax

        if keras.backend.backend() != "jax":
            raise RuntimeError(f"JaxEpochLoop needs Keras's JAX backend, not {keras.backend.backend()}")
        self._model = model
        self._batch_size = batch_size
        self._seed = seed
        self._shuffle = shuffle
        self._chunk_steps = chunk_steps
        self._n = len(x_train)
        # Builds the optimizer and the metrics as fit() does, from one batch.
        model._symbolic_build(data_batch=(x_train[:batch_size], y_train[:batch_size]))
        self._x = jax.device_put(x_train)
        self._y = jax.device_put(y_train)
        self._validation = (
            (jax.device_put(validation[0]), jax.device_put(validation[1])) if validation is not None else None
        )
        self._train_chunk, self._test_chunk = _chunk_functions(model)

    def run_epoch(self, epoch: int, on_chunk: ChunkHandler | None = None) -> tuple[dict[str, float], float]:
        """Train 0-based ``epoch`` and validate; returns (fit-style logs, seconds spent training)."""
        import jax

        model = self._model
        model.reset_metrics()
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        start = time.perf_counter()
        order = epoch_order(self._n, seed=self._seed, epoch=epoch, shuffle=self._shuffle)
        done = 0
        for index in _chunks(order, self._batch_size, self._chunk_steps):
            state = self._train_chunk(state, self._x, self._y, jax.device_put(index))
            done += len(index)
            if on_chunk is not None:
                jax.block_until_ready(state[3])
                elapsed = time.perf_counter() - start
                on_chunk(done, done * self._batch_size / elapsed if elapsed > 0 else 0.0)
        jax.block_until_ready(state)
        train_seconds = time.perf_counter() - start
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        _assign(model.trainable_variables, trainable)
        _assign(model.non_trainable_variables, non_trainable)
        _assign(model.optimizer.variables, optimizer_vars)
        _assign(model.metrics_variables, metrics_vars)
        logs = _floats(model.get_metrics_result())
        if self._validation is not None:
            logs.update({f"val_{k}": v for k, v in self._validate(*self._validation).items()})
        return logs, train_seconds

    def _validate(self, x: Any, y: Any) -> dict[str, float]:
        import jax

        model = self._model
        model.reset_metrics()
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.metrics_variables],
        )
        for index in _chunks(np.arange(len(x), dtype=np.int32), self._batch_size, self._chunk_steps):
            state = self._test_chunk(state, x, y, jax.device_put(index))
        _assign(model.metrics_variables, state[2])
        return _floats(model.get_metrics_result())


def _chunk_functions(model: keras.Model) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted train and test chunks of ``model``, made once per model object and kept on it.

    On the model, not on the loop: a model that ``kept_models`` gives to the next training of its graph
    brings its traced and compiled programs with it (jax.jit caches per function object and shapes).
    Made anew when the model was compiled again (another optimizer object) or its trainable layers
    changed: a trace reads both. They close over the model only: the arrays are arguments, not
    closed-over constants (constants would be baked into the program, and a kept model would keep an old
    run's data alive).
    """
    import jax

    flags = tuple(layer.trainable for layer in model._flatten_layers())
    kept = getattr(model, _CHUNKS_ATTRIBUTE, None)
    if kept is not None and kept[0]() is model.optimizer and kept[1] == flags:
        return kept[2]
    chunks = (jax.jit(partial(_train_steps, model)), jax.jit(partial(_test_steps, model)))
    made_for = (weakref.ref(model.optimizer), flags, chunks)
    object.__setattr__(model, _CHUNKS_ATTRIBUTE, made_for)  # past Keras's attribute tracking
    return chunks


def _train_steps(model: keras.Model, state: Any, x: Any, y: Any, index: Any) -> Any:
    import jax

    def step(state: Any, batch: Any) -> tuple[Any, None]:
        _logs, state = model.train_step(state, (x[batch], y[batch]))
        return state, None

    return jax.lax.scan(step, state, index)[0]


def _test_steps(model: keras.Model, state: Any, x: Any, y: Any, index: Any) -> Any:
    import jax

    def step(state: Any, batch: Any) -> tuple[Any, None]:
        _logs, state = model.test_step(state, (x[batch], y[batch]))
        return state, None

    return jax.lax.scan(step, state, index)[0]


def _assign(variables: list[Any], values: list[Any]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _floats(results: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in results.items()}
