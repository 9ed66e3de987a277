"""Starting images for the visualizations of Exercise 4: random noise, a sine pattern, or a photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.specs import ImageKind
from worker.experiments.errors import ImageError

# The seed's Fig. 3 is "an image with random values in the three RGB channels": every pixel of every
# channel uniform over the whole 0..255 range (contract.specs.BUILTIN_IMAGE_TEXT says so in captions).
# Chollet's keras.io example starts from faint noise around gray instead, which looks like a flat gray
# square: not what the seed shows.
_SINE_PERIODS = 4  # full periods across the image


def make_input_image(image: str, size: int, seed: int) -> np.ndarray:
    """A uint8 (size, size, 3) image: ``random`` (seeded full-range RGB noise), ``sine``, or a photo."""
    if image == ImageKind.RANDOM:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    if image == ImageKind.SINE:
        return _sine(size)
    return _photo(Path(image), size)


def _sine(size: int) -> np.ndarray:
    """Sinusoids in the RGB components: red varies along x, green along y, blue along the diagonal."""
    t = np.linspace(0.0, 2 * np.pi * _SINE_PERIODS, size, endpoint=False)
    xx, yy = np.meshgrid(t, t)
    channels = np.stack([np.sin(xx), np.sin(yy), np.sin((xx + yy) / 2)], axis=-1)
    return np.round((channels + 1.0) * 127.5).astype(np.uint8)


def _photo(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageError(f"{path}: no such image file (expected 'random', 'sine' or a path to a photo)")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
