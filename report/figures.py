"""Figures 1-8 of the seed, one function each, drawn with matplotlib's Agg canvas (no pyplot state).

Each function returns a :class:`FigureSpec`: the matplotlib figure, its file stem and caption, and the runs
it shows. Missing data never raises: the figure becomes a visible placeholder that says why.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from contract.specs import ImageKind, Regime
from report import captions
from report.data import REGIME_ORDER, ReportData, RunInfo, TrainRun, VisRun
from report.failures import Failure, failures, reference
from report.notes import CHANCE, accuracy_notes, loss_notes
from report.tables import PAPER_PROFILE, REGIME_LABELS, SEED_EPOCHS, SEED_VALUES
from storage.artifacts import write_atomically

COLORS: dict[str, str] = {Regime.SCRATCH: "#1f77b4", Regime.IMAGENET: "#d62728", Regime.FINETUNE: "#2ca02c"}
DPI = 110
IMAGE_TITLES: dict[str, str] = {
    ImageKind.RANDOM: "random image",
    ImageKind.SINE: "sinusoidal pattern",
    ImageKind.PHOTO: "photo",
}


@dataclass(frozen=True)
class FigureSpec:
    number: int
    stem: str
    title: str
    caption: str
    figure: Figure
    runs: tuple[RunInfo, ...]
    missing: str | None = None  # why this is a placeholder; None for a real figure
    notes: tuple[str, ...] = ()  # lines under the caption: what the figure shows that a reader asks about

    @property
    def placeholder(self) -> bool:
        return self.missing is not None


def save(spec: FigureSpec, out_dir: Path) -> tuple[Path, Path]:
    """Write PNG and PDF from the same figure object, each atomically (a reader never sees half)."""
    png, pdf = out_dir / f"{spec.stem}.png", out_dir / f"{spec.stem}.pdf"
    for path, options in ((png, {"dpi": DPI, "format": "png"}), (pdf, {"format": "pdf"})):
        buffer = io.BytesIO()
        spec.figure.savefig(buffer, **options)  # type: ignore[arg-type]
        write_atomically(path, buffer.getvalue())
    return png, pdf


def placeholder(message: str, size: tuple[float, float] = (6.4, 2.4)) -> Figure:
    fig = Figure(figsize=size)
    fig.patch.set_facecolor("#fff4e5")
    fig.text(0.5, 0.5, _wrap(message), ha="center", va="center", fontsize=11, color="#8a4b00", wrap=True)
    return fig


def _wrap(text: str, width: int = 70) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines[:8])


def _why_missing(runs: tuple[RunInfo, ...], what: str, fails: tuple[Failure, ...] = ()) -> str:
    """Why a figure is a placeholder. Errors are not repeated here: they point to the report's Failures,
    where each distinct error is listed once."""
    if not runs:
        return f"not available: this sweep has no run for {what}"
    return "not available: " + "; ".join(reference(fails, r) for r in runs)


def _curves(
    ax: Axes, regime: str, runs: tuple[TrainRun, ...], metric: str, scale: float
) -> tuple[bool, float | None]:
    """Mean line (and min-max band over seeds) of training (dashed) and validation (solid) ``metric``."""
    with_data = [r for r in runs if r.epochs]
    if not with_data:
        return False, None
    last = max(r.epochs[-1].epoch for r in with_data)
    epochs = np.arange(1, last + 1)
    unfinished = [r for r in runs if not r.run.succeeded]
    status = f" ({', '.join(sorted({r.run.status for r in unfinished}))})" if unfinished else ""
    for key, style, tag in ((metric, "--", "E"), (f"val_{metric}", "-", "V")):
        grid = np.full((len(with_data), last), np.nan)
        for i, run in enumerate(with_data):
            for e in run.epochs:
                value = getattr(e, key)
                if value is not None and 1 <= e.epoch <= last:
                    grid[i, e.epoch - 1] = value * scale
        present = ~np.all(np.isnan(grid), axis=0)
        if not present.any():
            continue
        x, g = epochs[present], grid[:, present]
        mean = np.nanmean(g, axis=0)
        label = f"{REGIME_LABELS.get(regime, regime)} {tag}{status}"
        ax.plot(x, mean, style, color=COLORS.get(regime), label=label, linewidth=1.6)
        if len(with_data) > 1:
            ax.fill_between(
                x, np.nanmin(g, axis=0), np.nanmax(g, axis=0), color=COLORS.get(regime), alpha=0.15
            )
    phase = next((p for p in (r.phase_change_epoch for r in with_data) if p is not None), None)
    return True, phase


def _curve_figure(
    data: ReportData, number: int, metric: str, fails: tuple[Failure, ...] | None = None
) -> FigureSpec:
    fails = failures(data) if fails is None else fails
    is_acc = metric == "accuracy"
    stem = f"fig{number}_{'accuracy' if is_acc else 'loss'}"
    title = "Accuracy vs. epoch" if is_acc else "Loss vs. epoch"
    runs = tuple(t.run for regime in REGIME_ORDER for t in data.train.get(regime, ()))
    fig = Figure(figsize=(8.0, 4.4))  # 880 px at DPI 110: embedded without resampling
    ax = fig.add_subplot()
    drawn = False
    phase: float | None = None
    for regime in REGIME_ORDER:
        ok, p = _curves(ax, regime, data.train.get(regime, ()), metric, 100.0 if is_acc else 1.0)
        drawn |= ok
        phase = phase if phase is not None else p
    n = data.seeds_per_regime
    caption = (
        f"{'Accuracy' if is_acc else 'Loss'} per epoch: training (E, dashed) and validation (V, solid) for "
        "random init (Rand.), ImageNet init (Imag.) and fine-tuning (FT)."
    )
    if n > 1:
        caption += f" Lines are the mean over up to {n} seeds per regime; the shaded band spans min to max."
    if not drawn:
        why = _why_missing(runs, "the training curves", fails) if runs else "not available: no training run"
        return FigureSpec(number, stem, title, caption, placeholder(why), runs, missing=why)
    if phase is not None:
        ax.axvline(
            phase,
            color="0.4",
            linestyle=":",
            linewidth=1.2,
            label=f"FT: head → tune (after {phase - 0.5:.0f})",
        )
    marked = _seed_marks(ax, data) if is_acc else False
    if is_acc:
        ax.axhline(100 * CHANCE, color="0.45", linestyle="-.", linewidth=1.0, label="chance (10 %)")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Accuracy [%]" if is_acc else "Loss (categorical cross-entropy)")
    ax.grid(True, alpha=0.3)
    # Beside the plot: inside, some curve always runs under it (the loss curves start top left, the
    # accuracies end top right).
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    if is_acc:
        caption += " The dash-dotted line is chance (10 % for ten balanced classes)."
    if marked:
        caption += (
            " Stars mark the values the seed reports (alpha 1.0), at the epochs it reports them, in the "
            "colour of their regime."
        )
    if phase is not None:
        caption += (
            " The dotted vertical line marks where fine-tuning switches from the head to the whole network."
        )
    finetune = data.train.get(Regime.FINETUNE, ())
    notes = accuracy_notes(finetune) if is_acc else loss_notes(finetune)
    return FigureSpec(number, stem, title, caption, fig, runs, notes=notes)


def _seed_marks(ax: Axes, data: ReportData) -> bool:
    """Stars where the seed reports a validation accuracy, for profile paper when this sweep trains the
    seed's epochs (elsewhere the epoch axis is not the seed's). True when any was drawn."""
    if data.sweep.profile != PAPER_PROFILE:
        return False
    drawn = False
    for i, regime in enumerate(REGIME_ORDER):
        runs = data.train.get(regime, ())
        seed = SEED_VALUES.get(regime)
        if seed is None or not runs or any(r.run.total_epochs != SEED_EPOCHS for r in runs):
            continue
        epochs, values = zip(*seed.points, strict=True)
        # Smaller for each later regime: ImageNet init and fine-tuning both end at 78 %, and a star
        # drawn over another of the same size would hide it.
        ax.plot(epochs, values, "*", color=COLORS.get(regime), markersize=14 - 3 * i, markeredgecolor="black",
                markeredgewidth=0.6, label="_nolegend_", zorder=5 + i)  # fmt: skip
        drawn = True
    if drawn:
        ax.plot([], [], "*", color="0.6", markeredgecolor="black", markersize=10, label="seed reports")
    return drawn


def accuracy_figure(data: ReportData, fails: tuple[Failure, ...] | None = None) -> FigureSpec:
    return _curve_figure(data, 1, "accuracy", fails)


def loss_figure(data: ReportData, fails: tuple[Failure, ...] | None = None) -> FigureSpec:
    return _curve_figure(data, 2, "loss", fails)


def _pick(data: ReportData, kind: str) -> tuple[VisRun | None, tuple[RunInfo, ...]]:
    """The visualization run shown for ``kind``: the latest succeeded one, else the latest one."""
    runs = data.visualizations.get(kind, ())
    infos = tuple(v.run for v in runs)
    done = [v for v in runs if v.run.succeeded]
    chosen = done[-1] if done else (runs[-1] if runs else None)
    return chosen, ((chosen.run,) if chosen else infos)


def _show(ax: Axes, path: Path, title: str) -> None:
    with Image.open(path) as img:
        # Nearest: the ascent's pixels as they are (no smoothing), and repeated pixels compress well.
        ax.imshow(np.asarray(img.convert("RGB")), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def input_figure(
    data: ReportData, number: int, kind: str, fails: tuple[Failure, ...] | None = None
) -> FigureSpec:
    fails = failures(data) if fails is None else fails
    stem = f"fig{number}_{kind}_input"
    title = f"Input image: {IMAGE_TITLES[kind]}"
    chosen, runs = _pick(data, kind)
    caption = f"The {IMAGE_TITLES[kind]} fed to the network for gradient ascent"
    caption += f": {captions.start_image(chosen.run.spec)}." if chosen is not None else "."
    if chosen is None or chosen.input_image is None:
        why = _why_missing(runs, f"the {kind} image", fails)
        if chosen is not None and chosen.run.succeeded:
            why = f"not available: run {chosen.run.id} succeeded but stored no input.png"
        return FigureSpec(number, stem, title, caption, placeholder(why), runs, missing=why)
    fig = Figure(figsize=(3.6, 3.6))
    _show(fig.add_subplot(), chosen.input_image, IMAGE_TITLES[kind])
    fig.tight_layout()
    return FigureSpec(number, stem, title, caption, fig, runs)


def _layers_caption(kind: str, number: int, chosen: VisRun | None) -> str:
    if chosen is None:
        return (
            f"Images obtained by gradient ascent from the {IMAGE_TITLES[kind]}: antepenultimate "
            "convolutional layer left, last convolutional layer right."
        )
    layers = list(chosen.layers[:2])
    where = (
        f"{layers[0]} (antepenultimate convolutional layer, left) and {layers[1]} (last, right)"
        if layers == ["conv_pw_12", "conv_pw_13"]
        else " and ".join(layers) + (" (left to right)" if len(layers) > 1 else "")
    )
    return (
        f"Gradient ascent from the {IMAGE_TITLES[kind]} of Fig. {number - 1} ({captions.ascent(chosen)}) "
        f"maximizing the mean activation of {where}, in {captions.model(chosen)}."
    )


def layers_figure(
    data: ReportData, number: int, kind: str, fails: tuple[Failure, ...] | None = None
) -> FigureSpec:
    fails = failures(data) if fails is None else fails
    stem = f"fig{number}_{kind}_layers"
    title = f"Gradient ascent from the {IMAGE_TITLES[kind]}"
    chosen, runs = _pick(data, kind)
    caption = _layers_caption(kind, number, chosen)
    if chosen is None or not chosen.layer_images:
        why = _why_missing(runs, f"the {kind} image", fails)
        if chosen is not None and chosen.run.succeeded:
            why = f"not available: run {chosen.run.id} succeeded but stored no layer images"
        return FigureSpec(number, stem, title, caption, placeholder(why), runs, missing=why)
    layers = list(chosen.layers[:2]) or sorted(chosen.layer_images)[:2]
    roles = ("antepenultimate", "last")
    fig = Figure(figsize=(7.0, 3.8))
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(1, len(layers), i + 1)
        path = chosen.layer_images.get(layer)
        if path is None:
            ax.text(0.5, 0.5, f"{layer}:\nnot available", ha="center", va="center", color="#8a4b00")
            ax.set_axis_off()
        else:
            _show(ax, path, f"{layer} ({roles[i]})" if len(layers) == 2 else layer)
    fig.tight_layout()
    line = captions.activation_line(chosen)
    return FigureSpec(number, stem, title, caption, fig, runs, notes=(line,) if line else ())


def all_figures(data: ReportData) -> list[FigureSpec]:
    """Figs. 1-2 always; Figs. 3-8 when the sweep visualizes (the ``all`` plan, or any visualization)."""
    fails = failures(data)
    specs = [accuracy_figure(data, fails), loss_figure(data, fails)]
    if not data.has_visualizations:
        return specs
    for kind, first in ((ImageKind.RANDOM, 3), (ImageKind.SINE, 5), (ImageKind.PHOTO, 7)):
        specs.append(input_figure(data, first, kind, fails))
        specs.append(layers_figure(data, first + 1, kind, fails))
    return specs
