"""The engine under Keras's JAX backend, in a subprocess (the backend is fixed when Keras is imported)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"),
]

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import sys
    from pathlib import Path
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from worker.experiments.data import load_cifar10
    from worker.experiments.regimes import train
    from worker.experiments.visualize import visualize
    from contract.specs import TrainSpec, VisualizeSpec

    data = load_cifar10(sys.argv[1], train_limit=40, val_limit=20)
    spec = TrainSpec(regime="scratch", seed=0, alpha=0.25, batch_size=20, epochs=2, lr=1e-3)
    seen = []
    # loop="device": the scanned loop, which "auto" picks only on an accelerator, through stop and resume.
    stop = lambda: True
    first = train(spec, data, Path(sys.argv[2]), on_epoch=seen.append, should_stop=stop, loop="device")
    result = train(spec, data, Path(sys.argv[2]), on_epoch=seen.append, loop="device")
    assert [r.epoch for r in seen] == [1, 2] and result.optimizer_steps == 4, (seen, result)
    vis_spec = VisualizeSpec(image="random", seed=0, source="none", alpha=0.25, input_size=32, steps=3)
    vis = visualize(dataclasses.replace(vis_spec, layers=("conv_pw_2",)))
    assert vis.activation_after["conv_pw_2"] > vis.activation_before["conv_pw_2"], vis
    print("JAX-OK")
    """
)


def test_train_resume_and_visualize_on_jax(cifar_folder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cifar_folder), str(tmp_path / "ckpt")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "JAX-OK" in proc.stdout, proc.stderr[-3000:]
