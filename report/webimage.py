"""The PNG a report page embeds: the figure at screen resolution, as small as it can be without blurring.

The figures on disk (PNG and PDF) stay as drawn. Embedded in ``report.html`` every figure is base64 text,
so its bytes are the page's weight: the gradient-ascent pictures are noise-like and compress badly as
24-bit PNGs. Palette PNGs of at most 256 colours (median cut, no dithering, so flat areas stay flat) are
several times smaller and look the same at screen size.
"""

from __future__ import annotations

import io
from pathlib import Path

MAX_WIDTH = 900  # CSS pixels: the page's text column is 1100 px wide with padding
COLOURS = 256


def web_png(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if rgb.width > MAX_WIDTH:
        rgb = rgb.resize((MAX_WIDTH, round(rgb.height * MAX_WIDTH / rgb.width)), Image.Resampling.LANCZOS)
    small = rgb.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()
