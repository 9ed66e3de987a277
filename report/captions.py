"""What Figs. 3-8 show, in words: the starting image, the model and layers, and whether the ascent worked.

Everything is read from the run's stored spec, its dependency (the trained model) and its result.json, so a
caption names exactly what was used (a default that changes later cannot make an old report lie).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from contract.specs import BUILTIN_IMAGE_TEXT, ImageKind
from report.data import RunInfo, VisRun
from report.tables import REGIME_NAMES


def _number(value: Any) -> str:
    return f"{float(value):g}"


def start_image(spec: Mapping[str, Any]) -> str:
    """E.g. "uniform random values 0-255 in each RGB channel (seed 0), 128×128 pixels" or
    "the photo dog.jpg (sha256 5a952205…), resized to 128×128 pixels"."""
    image = str(spec.get("image", ""))
    size = spec.get("input_size")
    at = f"{size}×{size} pixels" if size else "size not recorded"
    if image in BUILTIN_IMAGE_TEXT:
        seed = f" (seed {spec.get('seed')})" if image == ImageKind.RANDOM else ""
        return f"{BUILTIN_IMAGE_TEXT[image]}{seed}, {at}"
    name = spec.get("image_name") or (PurePath(image).name if not image.startswith("artifact:") else None)
    sha = spec.get("image_sha256")
    what = f"the photo {name}" if name else "a photo (file name not recorded)"
    if sha:
        what += f" (sha256 {str(sha)[:8]}…)"
    return f"{what}, resized to {at}"


def model(vis: VisRun) -> str:
    """Which network the ascent ran on."""
    spec = vis.run.spec
    alpha = spec.get("alpha")
    if vis.model is not None:
        return trained_model(vis.model)
    source = spec.get("source")
    if source == "imagenet":
        return f"MobileNet (alpha {_number(alpha)}) with ImageNet weights, not trained on CIFAR-10"
    if source == "none":
        return f"MobileNet (alpha {_number(alpha)}) with random weights"
    return "a trained model whose run is not recorded"


def trained_model(run: RunInfo) -> str:
    spec = run.spec
    regime = str(spec.get("regime", run.label))
    size = spec.get("input_size", 32)
    epochs = run.total_epochs or spec.get("epochs")
    return (
        f"the model trained by run {run.id} ({REGIME_NAMES.get(regime, regime)}, alpha "
        f"{_number(spec.get('alpha', 0))}, {size}×{size} inputs, {epochs} epoch{'' if epochs == 1 else 's'}, "
        f"seed {run.seed})"
    )


def ascent(vis: VisRun) -> str:
    spec = vis.run.spec
    return f"{spec.get('steps')} steps of size {_number(spec.get('step_size', 0))}"


def activation_line(vis: VisRun) -> str | None:
    """ "Mean activation before → after: conv_pw_12 0.031 → 2.45 (rose); ..." or None if not recorded."""
    if not vis.activations:
        return None
    parts = []
    for layer in vis.layers or tuple(vis.activations):
        if layer not in vis.activations:
            continue
        before, after = vis.activations[layer]
        verdict = "rose" if after > before else "did NOT rise"
        parts.append(f"{layer} {before:.3g} → {after:.3g} ({verdict})")
    return "Mean activation of the layer, starting image → result: " + "; ".join(parts) + "."
