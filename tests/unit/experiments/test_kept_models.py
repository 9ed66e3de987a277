"""A kept compiled model trains the next training of its graph exactly as a freshly compiled one would.

Each training starts from ``clear_session``, as in a warm task process (``worker.warm``), so that layer
names, and with them the graph key, are those of a fresh process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

from contract.specs import TrainSpec
from worker.experiments import kept_models
from worker.experiments.data import Cifar10, load_cifar10
from worker.experiments.models import base_of, build_model
from worker.experiments.regimes import TrainResult, train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]

BASE = {"alpha": 0.25, "batch_size": 32, "lr": 1e-3}
SCRATCH = TrainSpec(regime="scratch", seed=5, epochs=2, **BASE)
IMAGENET = TrainSpec(regime="imagenet", seed=6, epochs=2, **BASE)
FINETUNE = TrainSpec(regime="finetune", seed=7, head_epochs=1, tune_epochs=2, tune_lr=5e-4, **BASE)
AUGMENTED = TrainSpec(regime="scratch", seed=8, epochs=2, augment=True, **BASE)


@pytest.fixture(scope="module")
def data(cifar_folder: Path) -> Cifar10:
    return load_cifar10(cifar_folder)


@pytest.fixture(autouse=True)
def nothing_kept() -> None:
    kept_models.forget()


def _train(spec: TrainSpec, data: Cifar10, folder: Path, weights_dir: Path, *, reuse: bool) -> TrainResult:
    keras.backend.clear_session()
    return train(spec, data, folder, weights_dir=str(weights_dir), loop="fit", reuse_compiled=reuse)


def _metrics(result: TrainResult) -> list[tuple[object, ...]]:
    return [(r.epoch, r.phase, r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in result.history]


@pytest.mark.parametrize(
    ("before", "second", "graphs"),
    [
        ((SCRATCH,), IMAGENET, 1),
        ((SCRATCH,), FINETUNE, 1),
        # One graph after a finetune alone: its head-phase model was compiled again for the tune phase.
        ((FINETUNE,), dataclasses.replace(FINETUNE, seed=10), 1),
        # The tune phase reused scratch's model, so the head-phase model stays kept: the head phase reuses it.
        ((SCRATCH, FINETUNE), dataclasses.replace(FINETUNE, seed=10), 2),
        ((AUGMENTED,), dataclasses.replace(AUGMENTED, seed=9), 1),
    ],
    ids=[
        "scratch-then-imagenet",
        "scratch-then-finetune",
        "finetune-twice",
        "scratch-finetune-then-finetune",
        "augmented-twice",
    ],
)
def test_a_reused_model_gives_the_fresh_models_metrics(
    before: tuple[TrainSpec, ...],
    second: TrainSpec,
    graphs: int,
    data: Cifar10,
    weights_dir: Path,
    tmp_path: Path,
) -> None:
    plain = _train(second, data, tmp_path / "plain", weights_dir, reuse=False)
    assert kept_models.kept_count() == 0
    for i, spec in enumerate(before):
        _train(spec, data, tmp_path / f"before{i}", weights_dir, reuse=True)
    assert kept_models.kept_count() == graphs
    reused = _train(second, data, tmp_path / "reused", weights_dir, reuse=True)
    assert _metrics(reused) == _metrics(plain)
    assert reused.optimizer_steps == plain.optimizer_steps
    # The checkpoint is the reused model's, loadable and of this training's final weights.
    loaded = keras.models.load_model(reused.checkpoint_path)
    again = keras.models.load_model(plain.checkpoint_path)
    for a, b in zip(loaded.get_weights(), again.get_weights(), strict=True):
        assert (a == b).all()


def test_the_second_training_of_a_graph_is_trained_on_the_first_ones_model(
    data: Cifar10, weights_dir: Path, tmp_path: Path
) -> None:
    keras.backend.clear_session()
    first = build_model(alpha=0.25, input_size=32, weights="none")
    compiles: list[keras.Model] = []

    def compile_model(model: keras.Model) -> None:
        compiles.append(model)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")

    assert kept_models.compiled(first, lr=1e-3, steps_per_execution=1, compile_model=compile_model) is first
    first.fit(data.x_train[:32], keras.utils.to_categorical(data.y_train[:32], 10), verbose=0)
    keras.backend.clear_session()
    second = build_model(alpha=0.25, input_size=32, weights="imagenet", weights_dir=str(weights_dir))
    got = kept_models.compiled(second, lr=5e-4, steps_per_execution=1, compile_model=compile_model)
    assert got is first and compiles == [first]
    for a, b in zip(got.get_weights(), second.get_weights(), strict=True):
        assert (a == b).all()
    assert int(got.optimizer.iterations.numpy()) == 0
    assert float(got.optimizer.learning_rate.numpy()) == pytest.approx(5e-4)


def test_other_trainable_layers_or_steps_per_call_are_another_graph() -> None:
    keras.backend.clear_session()
    model = build_model(alpha=0.25, input_size=32, weights="none")
    key = kept_models.graph_key(model, steps_per_execution=1)
    assert kept_models.graph_key(model, steps_per_execution=128) != key
    base_of(model).trainable = False
    assert kept_models.graph_key(model, steps_per_execution=1) != key
    keras.backend.clear_session()
    augmented = build_model(alpha=0.25, input_size=32, weights="none", augment=True)
    assert kept_models.graph_key(augmented, steps_per_execution=1) != key


def test_a_model_recompiled_for_another_graph_leaves_its_old_entry() -> None:
    keras.backend.clear_session()
    model = build_model(alpha=0.25, input_size=32, weights="none")

    def compile_model(m: keras.Model) -> None:
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")

    base_of(model).trainable = False
    kept_models.compiled(model, lr=1e-3, steps_per_execution=1, compile_model=compile_model)
    base_of(model).trainable = True
    kept_models.compiled(model, lr=1e-3, steps_per_execution=1, compile_model=compile_model)
    assert kept_models.kept_count() == 1
    keras.backend.clear_session()
    frozen = build_model(alpha=0.25, input_size=32, weights="none")
    base_of(frozen).trainable = False
    got = kept_models.compiled(frozen, lr=1e-3, steps_per_execution=1, compile_model=compile_model)
    assert got is frozen  # compiled anew: the old model's traces are of the unfrozen graph


JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from contract.specs import TrainSpec
    from worker.experiments import device_loop, kept_models
    from worker.experiments.data import load_cifar10
    from worker.experiments.regimes import train

    data = load_cifar10(sys.argv[1], train_limit=40, val_limit=20)
    folder, weights = Path(sys.argv[2]), sys.argv[3]
    base = dict(alpha=0.25, batch_size=20, epochs=2, lr=1e-3)
    first = TrainSpec(regime="scratch", seed=0, **base)
    second = TrainSpec(regime="imagenet", seed=1, **base)

    def run(spec, name, reuse):
        keras.backend.clear_session()
        result = train(spec, data, folder / name, weights_dir=weights, loop="device", reuse_compiled=reuse)
        return [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in result.history]

    plain = run(second, "plain", False)
    run(first, "first", True)
    (kept,) = kept_models._kept.values()
    chunks = device_loop._chunk_functions(kept)
    assert run(second, "reused", True) == plain
    assert device_loop._chunk_functions(kept) is chunks  # the same jitted programs: no new trace
    print("JAX-REUSE-OK")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_on_jax_a_kept_model_keeps_its_compiled_chunks(
    cifar_folder: Path, weights_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(cifar_folder), str(tmp_path), str(weights_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "JAX-REUSE-OK" in proc.stdout, proc.stderr[-3000:]
