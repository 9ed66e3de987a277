"""Keras's global state, seeded and cleared without emptying TensorFlow's kernel cache.

Why not ``keras.utils.set_random_seed`` and ``keras.backend.clear_session``: both also reset TensorFlow's
eager context caches (``tf.random.set_seed`` calls ``TFE_ContextClearCaches``; ``clear_session`` calls
``clear_kernel_cache``). Those caches hold the instantiated kernels of every traced function, so after
either one the first call of a kept model's train step (``kept_models``) is instantiated and optimised
again: measured on the 2-core CPU, 1.7 s for the smoke model's first training batch and 0.2 s for its
first validation batch, in every training that reuses a model (about 0.4 s per epoch otherwise).

What they do for the engine is kept:

- :func:`seed`: Keras's global seed (from which every layer's seed generator and initializer draws),
  the reset global seed generator, Python's and NumPy's generators. TensorFlow's own global seed is not
  set: Keras 3 draws its random numbers through stateless ops seeded by its seed generators, so the engine
  runs no op that reads it (with op determinism on, such an op without a seed would raise). The per-epoch
  metrics equal those of ``keras.utils.set_random_seed`` (tested).
- :func:`clear_session`: Keras's global state (layer-name counters, the global seed generator, the dtype
  policy and other settings) replaced by empty state, as ``clear_session`` does, then garbage collected.

Both use Keras's ``global_state`` module (keras.src, not public API); where it is not found, they fall
back to Keras's public functions, which are correct but clear the caches.
"""

from __future__ import annotations

import gc
import random
import threading

import keras
import numpy as np

# Names in Keras's global state (keras/src/utils/rng_utils.py, keras/src/random/seed_generator.py).
_GLOBAL_RANDOM_SEED = "global_random_seed"
_GLOBAL_SEED_GENERATOR = "global_seed_generator"


def seed(value: int) -> None:
    """Seed Keras, Python and NumPy with ``value`` (and turn TensorFlow's op determinism on)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout: the public function, caches cleared
        keras.utils.set_random_seed(value)
    else:
        global_state.set_global_attribute(_GLOBAL_RANDOM_SEED, value)
        global_state.set_global_attribute(_GLOBAL_SEED_GENERATOR, None)  # made again from the seed
        random.seed(value)
        np.random.seed(value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def clear_session() -> None:
    """What ``keras.backend.clear_session`` resets of Keras, without TensorFlow's kernel cache."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        keras.backend.clear_session()
        return
    if not hasattr(global_state, "GLOBAL_STATE_TRACKER"):
        keras.backend.clear_session()
        return
    global_state.GLOBAL_STATE_TRACKER = threading.local()
    global_state.GLOBAL_SETTINGS_TRACKER = threading.local()
    gc.collect()


def tensorflow_seed_is_set() -> bool:
    """Whether TensorFlow's global seed is set (``tf.random.set_seed``); False on another backend."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:
        return tf.compat.v1.get_seed(None)[0] is not None
    except RuntimeError:  # op determinism on and no global seed: TensorFlow refuses to make an op seed
        return False
