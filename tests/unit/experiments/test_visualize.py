from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from contract.specs import SpecError, VisualizeSpec
from worker.experiments import visualize as visualize_module
from worker.experiments.errors import ImageError, StopRequested
from worker.experiments.gradients import ascend_stepwise
from worker.experiments.images import make_input_image
from worker.experiments.models import build_base
from worker.experiments.visualize import _ascent, _feature_model, preprocess, visualize


def test_ascent_raises_mean_activation_and_returns_images() -> None:
    # Random-init deep layers have vanishing activations, so the rise is checked on an early layer.
    spec = VisualizeSpec(
        image="random",
        seed=1,
        source="none",
        alpha=0.25,
        input_size=32,
        steps=5,
        layers=("conv_pw_2", "conv_pw_13"),
    )
    result = visualize(spec)
    assert result.activation_after["conv_pw_2"] > result.activation_before["conv_pw_2"]
    assert result.input_image.shape == (32, 32, 3) and result.input_image.dtype == np.uint8
    for image in result.layers.values():
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8


@pytest.fixture(scope="module")
def pw2() -> keras.Model:
    return _feature_model(build_base(alpha=0.25, input_size=32, weights="none"), "conv_pw_2")


def _record_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Chunks of 2 steps; returns the list the step count of each compiled call is appended to."""
    calls: list[int] = []
    real = visualize_module.ascend

    def counting_ascend(model: keras.Model, x: np.ndarray, steps: int, step_size: float) -> tuple:
        calls.append(steps)
        return real(model, x, steps, step_size)

    monkeypatch.setattr(visualize_module, "ascend", counting_ascend)
    monkeypatch.setattr(visualize_module, "ASCENT_CHUNK", 2)
    return calls


def test_ascent_runs_in_chunks_and_asks_before_each(
    monkeypatch: pytest.MonkeyPatch, pw2: keras.Model
) -> None:
    calls = _record_chunks(monkeypatch)
    asked_after: list[int] = []  # how many chunks had run each time should_stop was asked
    start = preprocess(make_input_image("random", 32, 1))
    final, before, after = _ascent(pw2, start, 5, 10.0, lambda: asked_after.append(len(calls)) or False)
    assert calls == [2, 2, 1] and asked_after == [0, 1, 2]
    # The chunks land where the old one-step-at-a-time loop does (tolerance: see test_gradients.py).
    expected, expected_before = ascend_stepwise(pw2, start, 5, 10.0)
    moved = np.linalg.norm((expected - start).ravel())
    assert np.linalg.norm((final - expected[0]).ravel()) <= 1e-3 * moved
    assert before == pytest.approx(expected_before, rel=1e-5) and after > before


def test_a_stop_takes_effect_before_the_next_chunk(monkeypatch: pytest.MonkeyPatch, pw2: keras.Model) -> None:
    calls = _record_chunks(monkeypatch)
    start = preprocess(make_input_image("random", 32, 1))
    with pytest.raises(StopRequested):
        _ascent(pw2, start, 5, 10.0, lambda: len(calls) == 1)
    assert calls == [2]  # one chunk ran, the second was never started


def test_a_stop_before_the_first_step_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = VisualizeSpec(
        image="random", seed=1, source="none", alpha=0.25, input_size=32, steps=5, layers=("conv_pw_2",)
    )
    calls: list[int] = []
    monkeypatch.setattr(visualize_module, "ascend", lambda *args: calls.append(1))
    with pytest.raises(StopRequested):
        visualize(spec, should_stop=lambda: True)
    assert calls == []


def test_imagenet_source_from_weights_folder(weights_dir: Path) -> None:
    spec = VisualizeSpec(image="sine", seed=0, source="imagenet", alpha=0.25, input_size=40, steps=1)
    result = visualize(spec, weights_dir=str(weights_dir))
    assert [img.shape for img in result.layers.values()] == [(40, 40, 3), (40, 40, 3)]


def test_unknown_layer_lists_valid_names() -> None:
    """The spec refuses it (as ``submit`` does) before any network is built; the engine's own check
    stays behind it for a network without the name."""
    spec = VisualizeSpec(
        image="sine", seed=0, source="none", alpha=0.25, input_size=32, steps=1, layers=("conv_pw_99",)
    )
    with pytest.raises(SpecError, match="conv_pw_99") as caught:
        visualize(spec)
    assert "conv_pw_1..13" in str(caught.value) and "conv_dw_1" in str(caught.value)


def test_bad_image_paths(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="missing.jpg"):
        make_input_image(str(tmp_path / "missing.jpg"), 32, 0)
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    with pytest.raises(ImageError, match="fake.jpg"):
        make_input_image(str(fake), 32, 0)


def test_input_images(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8) + 90).save(photo)
    assert make_input_image(str(photo), 64, 0).shape == (64, 64, 3)
    a, b = make_input_image("random", 16, 3), make_input_image("random", 16, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, make_input_image("random", 16, 4))
    sine = make_input_image("sine", 32, 0)
    assert sine.dtype == np.uint8 and sine.shape == (32, 32, 3) and sine.std() > 50


def test_a_kept_base_visualizes_the_next_weights_as_a_new_one_would(weights_dir: Path) -> None:
    """The second visualization of a graph runs on the first one's base, feature models and traced
    ascents (``kept_models``), with the new weights: the same images and activations as a new base."""
    from worker.experiments import kept_models

    spec = VisualizeSpec(
        image="sine", seed=2, source="imagenet", alpha=0.25, input_size=32, steps=4, layers=("conv_pw_2",)
    )
    kept_models.forget()
    keras.backend.clear_session()
    plain = visualize(spec, weights_dir=str(weights_dir), reuse_compiled=False)
    keras.backend.clear_session()
    visualize(dataclasses.replace(spec, source="none"))
    ((_, base),) = kept_models._kept.items()
    feature_model = _feature_model(base, "conv_pw_2")
    keras.backend.clear_session()
    reused = visualize(spec, weights_dir=str(weights_dir))
    assert list(kept_models._kept.values()) == [base] and _feature_model(base, "conv_pw_2") is feature_model
    assert reused.activation_before == plain.activation_before
    assert reused.activation_after == plain.activation_after
    np.testing.assert_array_equal(reused.layers["conv_pw_2"], plain.layers["conv_pw_2"])
    kept_models.forget()
