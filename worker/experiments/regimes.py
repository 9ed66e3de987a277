"""The three training regimes of Exercise 3: ``scratch``, ``imagenet`` and ``finetune``.

All use Adam, categorical cross-entropy on one-hot labels and categorical accuracy, with validation on
the (subset of the) test split after every epoch. ``finetune`` is two phases: ``head`` (base frozen,
``head_epochs`` at ``lr``) then ``tune`` (base unfrozen, recompiled with a fresh Adam at ``tune_lr``, as
the Keras transfer-learning guide does; epochs keep counting from ``head_epochs + 1``).

BatchNorm when unfrozen: we do NOT follow the guide's ``base(x, training=False)``. The base is called in
the default mode (see ``models``), so in ``head`` its BatchNorm layers are frozen and in inference mode, and
in ``tune`` they use batch statistics and update their moving averages on CIFAR-10. Reasons: ``scratch``
needs batch statistics to train at all, one model graph serves all regimes, and it is what the seed's
plain Keras code did (unfreezing ``base.trainable`` without ``training=False``). The price is the guide's
warning: the first ``tune`` epochs can disturb the pretrained statistics. ``spec.tune_bn = "frozen"`` does
what the guide does instead (see ``models.freeze_batchnorm``), to measure what the seed's way costs.

The loop (``loop``, from ``CONVLAB_TRAIN_LOOP``; ``auto``, the default, picks ``device`` on a GPU and
``fit`` on a CPU: see ``device_loop.resolve_loop``): ``device`` runs each epoch as a few
compiled multi-step calls with the data on the accelerator (``device_loop``: a JAX ``lax.scan`` of Keras's
own train step, or ``fit`` with ``steps_per_execution`` on TensorFlow); ``fit`` makes each epoch one plain
``fit`` call on in-memory float32 arrays (``fit_loop``). Both compute the same
per-epoch metrics (tested). After each epoch the checkpoint is saved first (see ``checkpoints``), then
``on_epoch`` is called, then older checkpoints are pruned, then ``should_stop``.

Head on features (``head_features``, on by default): where ``head_features.decide`` finds the base frozen
and deterministic (the ``finetune`` head phase without augmentation), the phase's loop trains the classifier
alone on the base's features, computed once, with the full model's optimizer; checkpoints stay the full
model. Same batches, same updates, same per-epoch metrics to float rounding (tested); the feature pass's
time is counted in the phase's first epoch of the attempt. ``head_features=False`` keeps the plain path.

Determinism: ``keras_state.seed(spec.seed)`` seeds initialisation (and augmentation), and on
the TensorFlow backend op determinism is enabled; on CPU two runs of one spec in one environment then
give identical metrics. Both loops draw each epoch's order of the training images from (seed, epoch)
(``fit_loop``, ``device_loop``): a new order every epoch, and a resumed run sees the order an
uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np

from contract.records import EpochRecord
from contract.specs import Regime, TrainSpec, spec_hash
from worker.experiments import head_features as features_path
from worker.experiments import kept_models, keras_state
from worker.experiments.callbacks import BatchProgress, EpochEnd, ProgressHandler
from worker.experiments.checkpoints import (
    CheckpointState,
    latest_state_file,
    load_checkpoint_model,
    optimizer_iterations,
    prune,
    read_checkpoint_history,
    read_state_file,
    save_checkpoint,
)
from worker.experiments.data import Cifar10
from worker.experiments.device_loop import JaxEpochLoop, steps_per_execution, uses_scan
from worker.experiments.errors import ExperimentError
from worker.experiments.fit_loop import fit_epochs
from worker.experiments.models import NUM_CLASSES, base_of, build_model, freeze_batchnorm

_log = logging.getLogger(__name__)

__all__ = ["EpochRecord", "TrainResult", "train", "read_checkpoint_history", "train_spec_hash"]


@dataclass(frozen=True)
class TrainResult:
    """Where a (possibly resumed, possibly stopped) training ended. ``history`` spans all attempts."""

    epochs_completed: int
    total_epochs: int
    stopped: bool
    optimizer_steps: int
    checkpoint_path: Path  # the model file of the last epoch
    state_path: Path  # the state file naming it
    history: tuple[EpochRecord, ...]


@dataclass(frozen=True)
class _Phase:
    name: str
    start: int  # epochs completed before the phase
    end: int  # epochs completed after it
    lr: float
    base_trainable: bool


def train_spec_hash(spec: TrainSpec) -> str:
    """Identity of a training for its checkpoint (code version left out: a new release may resume)."""
    return spec_hash("train", spec.to_dict(), code_version="")


def _phases(spec: TrainSpec) -> list[_Phase]:
    if spec.regime == Regime.FINETUNE:
        head = _Phase("head", 0, spec.head_epochs, spec.lr, base_trainable=False)
        return [head, _Phase("tune", spec.head_epochs, spec.total_epochs, spec.tune_lr, base_trainable=True)]
    return [_Phase("train", 0, spec.epochs, spec.lr, base_trainable=True)]


def _compile(
    model: keras.Model, lr: float, *, loop: str = "fit", optimizer: keras.optimizers.Optimizer | None = None
) -> None:
    """Adam at ``lr``, or ``optimizer`` as it is (the head-features path shares the full model's)."""
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(learning_rate=lr),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution(loop),
    )


def _optional(logs: dict[str, Any], key: str) -> float | None:
    return float(logs[key]) if key in logs else None


def train(
    spec: TrainSpec,
    data: Cifar10,
    checkpoint_dir: Path,
    *,
    weights_dir: str | None = None,
    resume_from: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: ProgressHandler | None = None,
    loop: str = "auto",
    head_features: bool = True,
    reuse_compiled: bool = True,
) -> TrainResult:
    """Train (or resume training) ``spec`` on ``data``, checkpointing into ``checkpoint_dir`` every epoch.

    Resumes from the state file ``resume_from`` (which may sit in another folder: a worker's previous
    attempt), else from the newest checkpoint in ``checkpoint_dir``. After each epoch's checkpoint is
    saved, ``on_epoch`` is called; only when it returns are older checkpoints in ``checkpoint_dir``
    removed, so an exception from it (a worker whose commit was refused) leaves every file in place.
    ``stopped`` is True only when ``should_stop`` ended the run before its last epoch. ``on_progress``
    (epoch, batches done, images/s) is told about every batch (every compiled call in the device loop),
    from Keras's callback thread or the training thread. ``loop``: ``"auto"``, ``"device"`` or ``"fit"``.
    """
    spec.validate()
    checkpoint_dir = Path(checkpoint_dir)
    digest = train_spec_hash(spec)
    state_file = resume_from if resume_from is not None else latest_state_file(checkpoint_dir)
    state = read_state_file(state_file) if state_file is not None else None
    if state is not None and state.spec_hash != digest:
        raise ExperimentError(
            f"{state_file}: a checkpoint of another training spec; use an empty folder for this one"
        )
    total = spec.total_epochs
    if state_file is not None and state is not None and state.epoch >= total:
        return _result(state_file, state, total, stopped=False)

    keras_state.seed(spec.seed)
    if state_file is not None and state is not None:
        model = load_checkpoint_model(state_file, state)
    else:
        model = build_model(
            alpha=spec.alpha,
            input_size=spec.input_size,
            weights=spec.weights,
            weights_dir=weights_dir,
            augment=spec.augment,
        )
    x_train = data.x_train.astype(np.float32)
    y_train = keras.utils.to_categorical(data.y_train, NUM_CLASSES).astype(np.float32)
    validation = (
        data.x_val.astype(np.float32),
        keras.utils.to_categorical(data.y_val, NUM_CLASSES).astype(np.float32),
    )
    n_train = len(x_train)

    history = list(state.history) if state else []
    done = state.epoch if state else 0
    steps_before = state.phase_start_steps if state else 0
    compiled_phase = state.phase if state else None
    stopped = False
    steps = state.optimizer_steps if state else 0

    for phase in _phases(spec):
        if done >= phase.end:
            continue
        if compiled_phase != phase.name:
            steps_before = steps
            base_of(model).trainable = phase.base_trainable
            if phase.name == "tune" and spec.tune_bn == "frozen":
                freeze_batchnorm(base_of(model))
            if reuse_compiled:
                model = kept_models.compiled(
                    model,
                    lr=phase.lr,
                    steps_per_execution=steps_per_execution(loop),
                    compile_model=partial(_compile, lr=phase.lr, loop=loop),
                )
            else:
                _compile(model, phase.lr, loop=loop)
            compiled_phase = phase.name

        # The loop trains `trainee` on `x_fit`: the full model on pixels, or (head phase, where the result is
        # the same) the classifier alone on the frozen base's features. Checkpoints are of the full model.
        trainee: keras.Model = model
        x_fit: np.ndarray = x_train
        val_fit: tuple[np.ndarray, np.ndarray] | None = validation
        decision = features_path.decide(
            model, spec, base_trainable=phase.base_trainable, enabled=head_features
        )
        path = "head on features" if decision.use else "plain"
        _log.info("phase %s: %s (%s)", phase.name, path, decision.reason)
        # The feature pass's time goes into the first epoch this attempt runs of the phase.
        extra_seconds = extra_train_seconds = 0.0
        if decision.use:
            prepared = features_path.prepare(
                model,
                x_train,
                validation,
                partial(_compile, lr=phase.lr, loop=loop, optimizer=model.optimizer),
            )
            trainee, x_fit, val_fit = prepared.model, prepared.x_train, prepared.validation
            extra_seconds, extra_train_seconds = prepared.seconds, prepared.train_seconds

        def end_epoch(
            epoch0: int,
            logs: dict[str, Any],
            seconds: float,
            train_seconds: float,
            phase: _Phase = phase,
            steps_before: int = steps_before,
            model: keras.Model = model,
        ) -> bool:
            nonlocal steps, stopped, done, state_file, state, extra_seconds, extra_train_seconds
            seconds, train_seconds = seconds + extra_seconds, train_seconds + extra_train_seconds
            extra_seconds = extra_train_seconds = 0.0
            record = EpochRecord(
                epoch=epoch0 + 1,
                phase=phase.name,
                loss=float(logs["loss"]),
                accuracy=float(logs["accuracy"]),
                val_loss=_optional(logs, "val_loss"),
                val_accuracy=_optional(logs, "val_accuracy"),
                lr=phase.lr,
                seconds=seconds,
                images_per_second=n_train / train_seconds if train_seconds > 0 else math.inf,
            )
            history.append(record)
            steps = steps_before + optimizer_iterations(model)
            done = record.epoch
            state = CheckpointState(digest, record.epoch, phase.name, steps, steps_before, tuple(history))
            state_file = save_checkpoint(checkpoint_dir, model, state)
            on_epoch(record)
            prune(checkpoint_dir, keep=state)
            if should_stop() and record.epoch < total:
                stopped = True
            return stopped

        if uses_scan(loop):
            epochs = JaxEpochLoop(
                trainee, x_fit, y_train, val_fit, batch_size=spec.batch_size, seed=spec.seed
            )
            for epoch0 in range(done, phase.end):
                started = time.perf_counter()
                report = _chunk_reporter(on_progress, epoch0 + 1)
                logs, train_seconds = epochs.run_epoch(epoch0, on_chunk=report)
                if end_epoch(epoch0, logs, time.perf_counter() - started, train_seconds):
                    break
            if stopped:
                break
            continue
        fit_epochs(
            trainee,
            x_fit,
            y_train,
            batch_size=spec.batch_size,
            seed=spec.seed,
            start=done,
            end=phase.end,
            validation=val_fit,
            callbacks=[EpochEnd(end_epoch)]
            + ([BatchProgress(on_progress, spec.batch_size)] if on_progress else []),
        )
        if stopped:
            break

    assert state_file is not None and state is not None, "train() saves a checkpoint after every epoch"
    return _result(state_file, state, total, stopped=stopped)


def _chunk_reporter(on_progress: ProgressHandler | None, epoch: int) -> Callable[[int, float], None] | None:
    if on_progress is None:
        return None
    return lambda batches, images_per_second: on_progress(epoch, batches, images_per_second)


def _result(state_file: Path, state: CheckpointState, total: int, *, stopped: bool) -> TrainResult:
    return TrainResult(
        epochs_completed=state.epoch,
        total_epochs=total,
        stopped=stopped,
        optimizer_steps=state.optimizer_steps,
        checkpoint_path=Path(state_file).parent / state.model_file,
        state_path=Path(state_file),
        history=state.history,
    )
