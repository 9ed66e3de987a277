"""The gradient of a layer's mean activation with respect to the input image: the only backend-specific code.

Keras 3 has no backend-neutral "gradient of a function w.r.t. its input", so there is one short function
per backend, chosen by ``keras.backend.backend()``. Each returns ``(loss, grad)`` as NumPy arrays, where
``loss = mean(feature_model(image))`` in inference mode.

The TensorFlow and JAX functions are compiled once per feature model (``tf.function`` / ``jax.jit``) and
cached in a weak dictionary: a 50-step ascent then costs one trace instead of 50 eager passes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

_COMPILED: weakref.WeakKeyDictionary[keras.Model, Any] = weakref.WeakKeyDictionary()


def _tensorflow(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    if feature_model not in _COMPILED:

        @tf.function
        def value_and_grad(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(feature_model(x, training=False))
            return loss, tape.gradient(loss, x)

        _COMPILED[feature_model] = value_and_grad
    loss, grad = _COMPILED[feature_model](tf.convert_to_tensor(image))
    return loss.numpy(), grad.numpy()


def _jax(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import jax
    import jax.numpy as jnp

    if feature_model not in _COMPILED:

        def mean_activation(trainable: list[Any], non_trainable: list[Any], x: jax.Array) -> jax.Array:
            outputs, _ = feature_model.stateless_call(trainable, non_trainable, x, training=False)
            return jnp.mean(outputs)

        _COMPILED[feature_model] = jax.jit(jax.value_and_grad(mean_activation, argnums=2))
    trainable = [v.value for v in feature_model.trainable_variables]
    non_trainable = [v.value for v in feature_model.non_trainable_variables]
    loss, grad = _COMPILED[feature_model](trainable, non_trainable, jnp.asarray(image))
    return np.asarray(loss), np.asarray(grad)


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


def input_gradient(feature_model: keras.Model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean activation, d mean activation / d image)`` for a float32 batch ``image`` (1, H, W, 3)."""
    backend = keras.backend.backend()
    if backend not in _BY_BACKEND:
        raise NotImplementedError(
            f"input gradients are implemented for {', '.join(_BY_BACKEND)}, not {backend}"
        )
    return _BY_BACKEND[backend](feature_model, np.asarray(image, dtype=np.float32))
