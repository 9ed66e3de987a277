"""Models a task process keeps, traced, for its next task of the same graph (issue 22).

Why: on a CPU a training phase's first batch costs about 9.5 s of tracing (docs/task-overhead.md), and
Keras pays it per model object: ``compile`` drops the traced train and test functions, and a new model
has none. The trainings of a plan mostly share one graph (``scratch``, ``imagenet`` and the ``tune``
phase of ``finetune``: same width, input size, augmentation and trainable layers), so a warm process
that keeps the compiled model of one phase can train the next phase of that graph on it, traced already.

How a kept model takes the place of a new one (:func:`compiled`): the new model's variables (weights,
BatchNorm statistics, the seed states of the random layers) are copied into the kept one, its layers'
trainable flags are set as the new model's, its optimizer's state (moments, step counter) is zeroed and
its learning rate set. Same graph, same starting values, same optimizer state as a fresh compile: the
same per-epoch metrics (tested bit for bit on a CPU), without the trace. The new model is built either
way (its initialisation draws the seeded random numbers a fresh process draws), only not compiled.

What makes two models "the same graph" (:func:`graph_key`) is everything Keras's trace reads: the model's
whole config (layer types, names, shapes, options), every layer's trainable flag (they choose the
trainable variables and BatchNorm's mode), the steps per compiled call, the backend, ``floatx`` and the
dtype policy. Anything else, and the model is compiled as before and kept in place of the least recently
used (at most :data:`KEEP`). A model object is kept under one key only: recompiled for another phase, it
leaves its old entry, whose traced functions it no longer has.

A visualization's base is kept the same way (:func:`in_place_of`, no optimizer): its feature models and
their traced ascent steps are per base object (``visualize``, ``gradients``), so the plan's second and
third visualizations of one checkpoint, or of one width and input size, trace nothing.

Isolation: everything a task can change in a kept model is overwritten by the next :func:`compiled` or
:func:`in_place_of` (variables, flags, optimizer state, learning rate; ``fit`` resets the metrics and
``stop_training``).
A task that fails recycles its process (:mod:`worker.warm`), and the kept models with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable

import keras

log = logging.getLogger(__name__)

# Graphs kept per process: a plan's full trainable MobileNet, the same with a frozen base (a finetune's
# head phase) and a visualization's base; each kept model holds its weights and traced functions.
KEEP = 3

_kept: OrderedDict[str, keras.Model] = OrderedDict()


def graph_key(model: keras.Model, *, steps_per_execution: int) -> str:
    """What a traced train step of ``model`` depends on, as a digest (equal digests: one graph)."""
    described = {
        "backend": keras.backend.backend(),
        "floatx": keras.config.floatx(),
        "dtype_policy": keras.config.dtype_policy().name,
        "steps_per_execution": steps_per_execution,
        "config": model.get_config(),
        "trainable": _trainable_flags(model),
        "variables": [(v.path, tuple(v.shape), str(v.dtype)) for v in model.variables],
    }
    text = json.dumps(described, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def compiled(
    model: keras.Model,
    *,
    lr: float,
    steps_per_execution: int,
    compile_model: Callable[[keras.Model], None],
) -> keras.Model:
    """``model`` compiled by ``compile_model`` (an Adam at ``lr``), or a kept model of the same graph
    holding ``model``'s variables and a zeroed optimizer at ``lr``: train the one returned."""
    key = graph_key(model, steps_per_execution=steps_per_execution)
    kept = _kept.get(key)
    if kept is not None and kept is not model:
        _take_variables(kept, model)
        optimizer = kept.optimizer
        for variable in optimizer.variables:
            variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))
        optimizer.learning_rate = lr
        _kept.move_to_end(key)
        log.info("reusing the compiled %s (same graph: no trace)", kept.name)
        return kept
    compile_model(model)
    _keep(key, model)
    return model


def in_place_of(model: keras.Model) -> keras.Model:
    """A kept model of ``model``'s graph holding ``model``'s variables, else ``model`` itself, kept: for
    models that are called, not compiled (a visualization's base, whose feature models and traced ascent
    steps belong to the base object)."""
    key = "called " + graph_key(model, steps_per_execution=0)
    kept = _kept.get(key)
    if kept is not None and kept is not model:
        _take_variables(kept, model)
        _kept.move_to_end(key)
        log.info("reusing %s and its traced functions (same graph)", kept.name)
        return kept
    _keep(key, model)
    return model


def forget() -> None:
    """Drop every kept model (tests; a process that wants its memory back)."""
    _kept.clear()


def kept_count() -> int:
    return len(_kept)


def _trainable_flags(model: keras.Model) -> list[bool]:
    return [layer.trainable for layer in model._flatten_layers(include_self=True)]


def _keep(key: str, model: keras.Model) -> None:
    for other in [k for k, m in _kept.items() if m is model]:
        del _kept[other]  # compiled again: its old traces are gone
    _kept[key] = model
    while len(_kept) > KEEP:
        _kept.popitem(last=False)


def _take_variables(kept: keras.Model, model: keras.Model) -> None:
    """``model``'s trainable flags and variable values, into ``kept`` (of the same graph key)."""
    # Parents first (pre-order): a parent's setter sets its children, each child is then set as it is.
    for kept_layer, layer in zip(
        kept._flatten_layers(include_self=True), model._flatten_layers(include_self=True), strict=True
    ):
        kept_layer.trainable = layer.trainable
    for kept_variable, variable in zip(kept.variables, model.variables, strict=True):
        kept_variable.assign(variable.value)
