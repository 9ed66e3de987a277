"""The device loop trains as ``fit`` trains: same per-epoch metrics with shuffling off, on both backends.

Tolerance: the device loop and ``fit`` run the same Keras train step, but XLA (JAX) compiles it inside a
``lax.scan`` and may fuse and sum in another order, so the two may differ by float32 rounding, which Adam
can amplify (it turns rounding-level gradient coordinates into steps of about ``lr``). Measured here on
CPU with the net below at ``lr=1e-3``: per-epoch metrics identical to the last printed digit, weights
within 4e-7 after 8 steps. The test allows ``1e-4`` relative on losses and one image on accuracies, while
the mistakes a loop can make move them by more than 1e-3: a skipped or repeated batch, an unweighted
partial batch, BatchNorm in the wrong mode, or a missed metric reset (epoch 2's loss would be the mean
of both epochs: 2.3315 instead of 2.3244).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from worker.experiments.device_loop import (
    CHUNK_STEPS,
    _chunks,
    describe_loop,
    epoch_order,
    has_accelerator,
    resolve_loop,
)
from worker.experiments.regimes import _compile

ROOT = Path(__file__).resolve().parents[3]
LOSS_RTOL = 1e-4


def test_each_epoch_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    first = epoch_order(100, seed=3, epoch=0)
    assert sorted(first.tolist()) == list(range(100))
    assert np.array_equal(first, epoch_order(100, seed=3, epoch=0))  # a resumed run sees the same order
    assert not np.array_equal(first, epoch_order(100, seed=3, epoch=1))
    assert not np.array_equal(first, epoch_order(100, seed=4, epoch=0))
    assert np.array_equal(epoch_order(5, seed=3, epoch=0, shuffle=False), np.arange(5))


def test_chunks_cover_every_image_once_with_at_most_three_shapes() -> None:
    order = epoch_order(1000, seed=0, epoch=0)
    chunks = list(_chunks(order, batch_size=32, chunk_steps=8))
    assert np.array_equal(np.concatenate([c.reshape(-1) for c in chunks]), order)
    assert {c.shape for c in chunks} == {(8, 32), (7, 32), (1, 8)}  # 31 full batches, then 8 images


# MobileNet's layer kinds (strided conv, depthwise conv, BatchNorm, ReLU6, pooling, softmax head) in a net
# that compiles in a second: the loop does not depend on the model, and the full MobileNet trains through
# the device loop in test_regimes (TensorFlow) and test_jax_backend (JAX, stop and resume).
SMALL_MODEL = textwrap.dedent(
    """
    def small_mobilenet():
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
        x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
        x = keras.layers.DepthwiseConv2D(3, use_bias=False)(x)
        x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
        x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
        x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    """
)


def _small_model() -> keras.Model:
    namespace: dict[str, object] = {"keras": keras}
    exec(SMALL_MODEL, namespace)
    return namespace["small_mobilenet"]()  # type: ignore[operator]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)
    return x, keras.utils.to_categorical(rng.integers(0, 10, n), 10).astype(np.float32)


@pytest.mark.slow
def test_tensorflow_steps_per_execution_trains_as_one_step_per_call() -> None:
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow case runs in the TensorFlow process")
    x, y = _data(100, 0)  # three full batches and a partial one
    histories = []
    for loop in ("fit", "device"):
        keras.utils.set_random_seed(1)
        model = _small_model()
        _compile(model, 1e-3, loop=loop)
        assert model.steps_per_execution == (CHUNK_STEPS if loop == "device" else 1)
        history = model.fit(
            x, y, batch_size=32, epochs=2, shuffle=False, validation_data=_data(40, 1), verbose=0
        ).history
        histories.append(history)
        assert int(model.optimizer.iterations.numpy()) == 8
    fit, device = histories
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(device[key], fit[key], rtol=LOSS_RTOL)
    for key in ("accuracy", "val_accuracy"):
        np.testing.assert_allclose(device[key], fit[key], atol=1 / 100 + 1e-9)


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from worker.experiments.device_loop import JaxEpochLoop
    from worker.experiments.regimes import _compile

    def data(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)
        return x, keras.utils.to_categorical(rng.integers(0, 10, n), 10).astype(np.float32)

    MODEL = sys.argv[2]

    def fresh():
        keras.utils.set_random_seed(1)
        namespace = {"keras": keras}
        exec(MODEL, namespace)
        model = namespace["small_mobilenet"]()
        _compile(model, 1e-3, loop="device")
        return model

    (x, y), val = data(100, 0), data(40, 1)
    fit_model = fresh()
    fit = fit_model.fit(x, y, batch_size=32, epochs=2, shuffle=False, validation_data=val, verbose=0).history
    device_model = fresh()
    # chunk_steps=2: two compiled calls of full batches (2 + 1 steps) and the partial batch of 4 images.
    loop = JaxEpochLoop(device_model, x, y, val, batch_size=32, seed=0, shuffle=False, chunk_steps=2)
    progress, device = [], {}
    for epoch in range(2):
        logs, seconds = loop.run_epoch(epoch, on_chunk=lambda b, ips: progress.append(b))
        for key, value in logs.items():
            device.setdefault(key, []).append(value)
    json.dump({
        "fit": {k: [float(v) for v in vs] for k, vs in fit.items()}, "device": device, "progress": progress,
        "steps": [int(fit_model.optimizer.iterations), int(device_model.optimizer.iterations)],
        "weights": max(float(np.max(np.abs(a - b))) for a, b in
                       zip(fit_model.get_weights(), device_model.get_weights())),
    }, open(sys.argv[1], "w"))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_device_loop_trains_as_fit(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(out), SMALL_MODEL],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    fit, device = result["fit"], result["device"]
    assert set(device) == set(fit) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result["steps"] == [8, 8]  # 4 steps per epoch, the partial batch included
    assert result["progress"] == [2, 3, 4, 2, 3, 4]
    print(json.dumps(result))
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(device[key], fit[key], rtol=LOSS_RTOL)
    for key, n in (("accuracy", 100), ("val_accuracy", 40)):
        np.testing.assert_allclose(device[key], fit[key], atol=1 / n + 1e-9)


def test_provenance_names_the_loop_that_ran() -> None:
    assert describe_loop("fit") == "fit: Keras model.fit, one call per batch"
    assert describe_loop("device").startswith("device: ")


def test_auto_picks_fit_on_a_cpu_only_machine() -> None:
    if has_accelerator():
        pytest.skip("a GPU is visible: auto picks the device loop here (what this test checks is CPU-only)")
    assert resolve_loop("auto") == "fit" and resolve_loop("device") == "device"
    assert describe_loop("auto") == "fit (auto: no accelerator): Keras model.fit, one call per batch"


def test_a_training_records_its_loop_and_the_report_shows_it(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from contract.settings import Settings
    from report.data import RunInfo
    from report.provenance import provenance
    from storage.models import RunKind
    from worker.attempt import _device_and_environment

    settings = Settings(home=tmp_path, compile_cache=False, train_loop="fit")
    _, train_env = _device_and_environment(RunKind.TRAIN, settings)
    _, visualize_env = _device_and_environment(RunKind.VISUALIZE, settings)
    assert train_env["train_loop"] == "fit: Keras model.fit, one call per batch"
    assert "train_loop" not in visualize_env  # a visualization has no training loop

    def run(run_id: str, kind: str, environment: dict[str, str]) -> RunInfo:
        return RunInfo(
            id=run_id, kind=kind, label="", status="succeeded", seed=0, spec={}, spec_hash="h",
            source_id=run_id, environment=environment, device="CPU", worker=None, started_at=None,
            finished_at=None, error=None, total_epochs=1, last_epoch=1,
        )  # fmt: skip

    sweep = SimpleNamespace(id="s", overrides={}, created_at=None, profile="quick", code_version=None)
    runs = [run("a", "train", train_env), run("b", "visualize", visualize_env)]
    items = dict(provenance(SimpleNamespace(sweep=sweep), runs).items)  # type: ignore[arg-type]
    assert items["training loop"] == "fit: Keras model.fit, one call per batch"
