"""Input gradients and the gradient-ascent loop: the only backend-specific code.

Keras 3 has no backend-neutral "gradient of a function w.r.t. its input", so there is one short function
per backend, chosen by ``keras.backend.backend()``, for each of two entry points, where
``loss = mean(feature_model(image))`` in inference mode:

- :func:`input_gradient`: one ``(loss, grad)`` pair as NumPy arrays.
- :func:`ascend`: ``steps`` steps of L2-normalized gradient ascent,
  ``x <- x + step_size / max(||grad||, 1e-6) * grad``, in ONE compiled call: a ``tf.function`` whose
  ``for _ in tf.range(steps)`` autograph turns into a ``tf.while_loop``, or a ``jax.jit`` of a
  ``jax.lax.fori_loop`` over ``stateless_call``'s value-and-grad. The image stays on the device between
  steps and nothing returns to Python until the last one; ``steps`` and ``step_size`` are tensor arguments,
  so a new value does not retrace. The norm is computed in float32 inside the loop (the step-by-step path
  of :func:`input_gradient` plus NumPy computes it in float64; tests/unit/experiments/test_gradients.py
  bounds the difference). Torch has no compiled loop here: it falls back to a Python loop of
  :func:`input_gradient`.

The compiled TensorFlow and JAX functions are built once per feature model and kept on the model object
(:func:`_once_per_model`), so they go when the model does: a weak dictionary keyed by the model would keep
it forever, since each function closes over its model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

_FUNCTIONS_ATTRIBUTE = "_convlab_gradient_functions"


def _once_per_model(feature_model: keras.Model, name: str, make: Callable[[], Any]) -> Any:
    """``make()`` the first time ``name`` is asked of ``feature_model``, the same object after that."""
    made: dict[str, Any] = getattr(feature_model, _FUNCTIONS_ATTRIBUTE, None) or {}
    if name not in made:
        made[name] = make()
        object.__setattr__(feature_model, _FUNCTIONS_ATTRIBUTE, made)  # past Keras's attribute tracking
    return made[name]


def _tensorflow(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    def make() -> Any:
        @tf.function
        def value_and_grad(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(feature_model(x, training=False))
            return loss, tape.gradient(loss, x)

        return value_and_grad

    loss, grad = _once_per_model(feature_model, "tf value_and_grad", make)(tf.convert_to_tensor(image))
    return loss.numpy(), grad.numpy()


def _tensorflow_ascend(
    feature_model: keras.Model, image: np.ndarray, steps: int, step_size: float
) -> tuple[np.ndarray, float]:
    import tensorflow as tf

    def make() -> Any:
        @tf.function
        def ascend(x: tf.Tensor, steps: tf.Tensor, step_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            first = tf.constant(0.0, tf.float32)
            for i in tf.range(steps):  # autograph: one tf.while_loop, not `steps` traced copies
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.cast(tf.reduce_mean(feature_model(x, training=False)), tf.float32)
                grad = tape.gradient(loss, x)
                first = tf.where(i == 0, loss, first)
                x = x + (step_size / tf.maximum(tf.norm(grad), 1e-6)) * grad
            return x, first

        return ascend

    x, first = _once_per_model(feature_model, "tf ascend", make)(
        tf.convert_to_tensor(image), tf.constant(steps, tf.int32), tf.constant(step_size, tf.float32)
    )
    return x.numpy(), float(first.numpy())


def _jax_value_and_grad(feature_model: keras.Model) -> Callable[..., Any]:
    """``(trainable, non_trainable, x) -> (loss, d loss / d x)``: pure (``stateless_call``), not jitted."""
    import jax
    import jax.numpy as jnp

    def mean_activation(trainable: list[Any], non_trainable: list[Any], x: jax.Array) -> jax.Array:
        outputs, _ = feature_model.stateless_call(trainable, non_trainable, x, training=False)
        return jnp.mean(outputs).astype(jnp.float32)

    return jax.value_and_grad(mean_activation, argnums=2)


def _jax_weights(feature_model: keras.Model) -> tuple[list[Any], list[Any]]:
    return (
        [v.value for v in feature_model.trainable_variables],
        [v.value for v in feature_model.non_trainable_variables],
    )


def _jax(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import jax
    import jax.numpy as jnp

    value_and_grad = _once_per_model(
        feature_model, "jax value_and_grad", lambda: jax.jit(_jax_value_and_grad(feature_model))
    )
    loss, grad = value_and_grad(*_jax_weights(feature_model), jnp.asarray(image))
    return np.asarray(loss), np.asarray(grad)


def _jax_ascend(
    feature_model: keras.Model, image: np.ndarray, steps: int, step_size: float
) -> tuple[np.ndarray, float]:
    import jax
    import jax.numpy as jnp

    def make() -> Any:
        value_and_grad = _jax_value_and_grad(feature_model)

        def ascend(
            trainable: list[Any],
            non_trainable: list[Any],
            x: jax.Array,
            steps: jax.Array,
            step_size: jax.Array,
        ) -> tuple[jax.Array, jax.Array]:
            def step(i: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
                x, first = carry
                loss, grad = value_and_grad(trainable, non_trainable, x)
                norm = jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(grad))), 1e-6)
                return x + (step_size / norm) * grad, jnp.where(i == 0, loss, first)

            # A traced trip count: fori_loop lowers to one while loop, and a new `steps` does not recompile.
            return jax.lax.fori_loop(0, steps, step, (x, jnp.zeros((), jnp.float32)))

        return jax.jit(ascend)

    x, first = _once_per_model(feature_model, "jax ascend", make)(
        *_jax_weights(feature_model),
        jnp.asarray(image),
        jnp.asarray(steps, jnp.int32),
        jnp.asarray(step_size, jnp.float32),
    )
    return np.asarray(x), float(first)


def _torch(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = keras.ops.convert_to_tensor(image).detach().requires_grad_(True)
    loss = feature_model(x, training=False).mean()
    loss.backward()
    return loss.detach().cpu().numpy(), x.grad.detach().cpu().numpy()


_BY_BACKEND: dict[str, Callable[[keras.Model, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "tensorflow": _tensorflow,
    "jax": _jax,
    "torch": _torch,
}


def _for_backend(table: dict[str, Any], what: str) -> Any:
    backend = keras.backend.backend()
    if backend not in table:
        raise NotImplementedError(f"{what} implemented for {', '.join(table)}, not {backend}")
    return table[backend]


def input_gradient(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean activation, d mean activation / d image)`` for a float32 batch ``image`` (1, H, W, 3)."""
    return _for_backend(_BY_BACKEND, "input gradients are")(
        feature_model, np.asarray(image, dtype=np.float32)
    )


def ascend_stepwise(
    feature_model: keras.Model, image: np.ndarray, steps: int, step_size: float
) -> tuple[np.ndarray, float]:
    """:func:`ascend` as a Python loop of :func:`input_gradient` (one dispatch and one NumPy round trip per
    step, the norm in float64): torch's ascent, and the reference the compiled loops are tested against."""
    x: np.ndarray = np.asarray(image, dtype=np.float32)
    first = None
    for _ in range(steps):
        loss, grad = input_gradient(feature_model, x)
        if first is None:
            first = float(loss)
        norm = max(float(np.sqrt(np.sum(np.square(grad, dtype=np.float64)))), 1e-6)
        x = x + np.float32(step_size / norm) * grad
    assert first is not None  # steps >= 1 (checked by ascend)
    return x, first


_ASCEND_BY_BACKEND: dict[str, Callable[[keras.Model, np.ndarray, int, float], tuple[np.ndarray, float]]] = {
    "tensorflow": _tensorflow_ascend,
    "jax": _jax_ascend,
    "torch": ascend_stepwise,
}


def ascend(
    feature_model: keras.Model, image: np.ndarray, steps: int, step_size: float
) -> tuple[np.ndarray, float]:
    """``steps`` (>= 1) steps of L2-normalized gradient ascent from the float32 batch ``image`` (1, H, W, 3),
    in one compiled call: ``(final image batch, mean activation of the starting image)``."""
    if steps < 1:
        raise ValueError(f"steps: at least 1, not {steps}")
    fn = _for_backend(_ASCEND_BY_BACKEND, "gradient ascent is")
    return fn(feature_model, np.asarray(image, dtype=np.float32), int(steps), float(step_size))
