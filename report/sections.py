"""Text shared by the HTML and Markdown renderers: the Beyond table's cells, questions, warning lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from report.beyond import Comparison
from report.data import RunInfo
from report.figures import FigureSpec
from report.tables import format_seconds

QUESTIONS = (
    "Why does fine-tuning not beat ImageNet init? (The seed guesses that ImageNet's 1000-class features "
    "confuse the last layers.) Tested: fine-tuning with BatchNorm kept frozen once the base is unfrozen, as "
    "Keras's transfer-learning guide does, against the seed's way (BatchNorm trains on batch statistics).",
    "Why is ImageNet init only about 78 %? The seed feeds 32×32 images to weights made for 224×224 (the "
    "last feature map is 1×1). Tested: inputs upscaled to a size the weights were made for, and standard "
    "augmentation (random shift of up to 4 pixels, horizontal flip), alone and together.",
)

WALL_TIME = (
    "time spent running (finished − started for a run claimed once; for a run resumed after a retry or a "
    "lost worker, the sum of its epochs' seconds, so the wait between attempts is not counted)"
)
FAILED_OR_CANCELLED = "Runs that failed: see Failures; runs that were cancelled: see Cancelled."


def cancelled_intro(sweep_id: str) -> str:
    return (
        "Stopped on request, not errors: a cancelled training keeps its checkpoint, and no conclusion is "
        f"judged on a run that did not finish. `orchestrator retry {sweep_id}` resumes them."
    )


BEYOND_HEADER = [
    "Run",
    "What changes (vs the seed's run of its regime)",
    "Runs",
    "Final val. acc.",
    "Best val. acc.",
    "Δ final vs the seed's way (points)",
    "Gain over the last quarter of epochs (points)",
    "Wall time per run",
    "Images/s",
]


def beyond_cells(c: Comparison) -> list[str]:
    row = c.row
    status = ", ".join(f"{row.statuses.count(s)} {s}" for s in sorted(set(row.statuses)))
    return [
        c.label,
        c.changes,
        status,
        row.final.text() if row.final else "–",
        row.best.text() if row.best else "–",
        f"{c.delta:+.1f}" if c.delta is not None else "–",
        f"{c.late_gain:+.1f}" if c.late_gain is not None else "–",
        format_seconds(row.seconds),
        f"{row.images_per_second:.0f}" if row.images_per_second is not None else "–",
    ]


def runs_of(groups: Mapping[str, Sequence[Any]]) -> list[RunInfo]:
    """The RunInfo of every TrainRun/VisRun in a mapping of groups."""
    return [item.run for items in groups.values() for item in items]


def placeholder_line(figures: Sequence[tuple[FigureSpec, Path]]) -> list[str]:
    """One warning for all placeholder figures (each says why under it) instead of one per figure."""
    missing = [str(spec.number) for spec, _ in figures if spec.placeholder]
    if not missing:
        return []
    which = (
        f"Fig. {missing[0]} is a placeholder"
        if len(missing) == 1
        else f"Figs. {', '.join(missing)} are placeholders"
    )
    return [f"{which}: the runs they need have not succeeded (the reason is under each figure)."]
