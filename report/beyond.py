"""Beyond the seed: what each controlled change of the ``explain`` plan bought, and Figs. 9-10.

Every variant is compared with the seed's run of its own regime in the same sweep (same data, seeds and
epochs); what changed is read from the two stored specs, not from the variant's name. The seed's two open
questions are answered with this sweep's numbers, and the best run is checked against the goal of >= 90 %
validation accuracy at alpha 1.0 on the full data.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from contract.specs import Regime
from report.data import ReportData, TrainRun
from report.figures import COLORS, FigureSpec, placeholder
from report.notes import accuracy_notes, loss_notes
from report.tables import RegimeRow, Stat, regime_row

GOAL_PERCENT = 90.0
GOAL_ALPHA = 1.0
LATE = 0.25  # "late gain": points gained over the last quarter of the epochs (is it still rising?)
_SPEC_WORDS = {
    "tune_bn": lambda old, new: (
        "BatchNorm frozen once the base is unfrozen" if new == "frozen" else f"BatchNorm {new}"
    ),
    "input_size": lambda old, new: f"inputs upscaled {old}×{old} → {new}×{new}",
    "augment": lambda old, new: "augmentation (shift ≤ 4 px, flip)" if new else "no augmentation",
}
_COMPARED = (
    "tune_bn", "input_size", "augment", "alpha", "train_limit", "val_limit", "batch_size", "epochs",
    "head_epochs", "tune_epochs", "lr", "tune_lr",
)  # fmt: skip
_DEFAULTS: Mapping[str, Any] = {"tune_bn": "batch", "augment": False}


@dataclass(frozen=True)
class Comparison:
    label: str
    regime: str
    changes: str  # what differs from the seed's run of the same regime; "the seed's way" for those
    row: RegimeRow
    baseline: Stat | None  # the seed's run of the same regime, final validation accuracy
    late_gain: float | None  # mean points gained over the last quarter of the epochs

    @property
    def delta(self) -> float | None:
        if self.row.final is None or self.baseline is None or self.changes == SEED_WAY:
            return None
        return self.row.final.mean - self.baseline.mean


SEED_WAY = "the seed's way"


@dataclass(frozen=True)
class BeyondTable:
    rows: tuple[Comparison, ...]
    answers: tuple[str, ...]


def _value(spec: Mapping[str, Any], key: str) -> Any:
    return spec.get(key, _DEFAULTS.get(key))


def changes(spec: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> str:
    if baseline is None:
        return "no run of the seed's way in this sweep to compare with"
    words = []
    for key in _COMPARED:
        old, new = _value(baseline, key), _value(spec, key)
        if old != new:
            word = _SPEC_WORDS.get(key)
            words.append(word(old, new) if word else f"{key} {old} → {new}")
    return "; ".join(words) or SEED_WAY


def late_gain(runs: tuple[TrainRun, ...]) -> float | None:
    gains = []
    for run in runs:
        values = {e.epoch: e.val_accuracy for e in run.epochs if e.val_accuracy is not None}
        if len(values) < 2:
            continue
        last = max(values)
        earlier = [e for e in values if e <= last - max(1, math.floor(LATE * last))]
        if earlier:
            gains.append(100.0 * (values[last] - values[max(earlier)]))
    return statistics.fmean(gains) if gains else None


def beyond_table(data: ReportData) -> BeyondTable:
    rows = []
    seed_rows = {regime: regime_row(regime, runs) for regime, runs in data.train.items() if runs}
    for group in (data.train, data.variants):
        for label, runs in group.items():
            if not runs:
                continue
            regime = runs[0].regime
            baseline_runs = data.train.get(regime, ())
            baseline = baseline_runs[0].run.spec if baseline_runs else None
            rows.append(
                Comparison(
                    label=label,
                    regime=regime,
                    changes=changes(runs[0].run.spec, baseline),
                    row=regime_row(label, runs),
                    baseline=seed_rows[regime].final if regime in seed_rows else None,
                    late_gain=late_gain(runs),
                )
            )
    return BeyondTable(rows=tuple(rows), answers=_answers(tuple(rows), data))


def _final(rows: tuple[Comparison, ...], label: str) -> Stat | None:
    """What the answers judge on: the final accuracy of the label's succeeded runs."""
    return next((r.row.finished for r in rows if r.label == label), None)


def _pct(stat: Stat | None) -> str:
    return f"{stat.mean:.1f} %" if stat else "–"


def _versus(new: Stat | None, old: Stat | None) -> str:
    if new is None or old is None:
        return "not judged yet (a run compared has not finished)"
    gap = new.mean - old.mean
    return f"{new.mean:.1f} % against {old.mean:.1f} % ({gap:+.1f} points)"


def _answers(rows: tuple[Comparison, ...], data: ReportData) -> tuple[str, ...]:
    ft, ft_bn, imagenet = (_final(rows, x) for x in ("finetune", "finetune+bn-frozen", "imagenet"))
    lines = []
    if any(r.label == "finetune+bn-frozen" for r in rows):
        lines.append(
            "Why does fine-tuning not beat ImageNet init? Fine-tuning with BatchNorm kept frozen once the "
            f"base is unfrozen ends at {_versus(ft_bn, ft)} for the seed's way; ImageNet init ends at "
            f"{_pct(imagenet)}."
        )
    q2 = [r for r in rows if r.regime == Regime.IMAGENET and r.changes != SEED_WAY]
    if q2:
        parts = "; ".join(f"{r.changes}: {_versus(r.row.finished, imagenet)}" for r in q2)
        lines.append(f"Why is ImageNet init only ~78 %? Against ImageNet init the seed's way — {parts}.")
    done = [r for r in rows if r.row.finished is not None]
    if done:
        best = max(done, key=lambda r: r.row.finished.mean if r.row.finished else -1.0)
        assert best.row.finished is not None
        lines.append(
            f"Best run of this sweep: {best.label} ({best.changes}) at {best.row.finished.text()} final "
            f"validation accuracy (best epoch {best.row.best.text() if best.row.best else '–'})."
        )
        lines.append(_goal(best, data))
    return tuple(lines)


def _goal(best: Comparison, data: ReportData) -> str:
    runs = data.variants.get(best.label) or data.train.get(best.label) or ()
    spec = runs[0].run.spec if runs else {}
    full = spec.get("train_limit") is None and spec.get("val_limit") is None
    final = best.row.finished.mean if best.row.finished else 0.0
    if spec.get("alpha") == GOAL_ALPHA and full:
        verdict = "met" if final >= GOAL_PERCENT else "not met"
        return f"Goal: >= {GOAL_PERCENT:.0f} % at alpha 1.0 on all of CIFAR-10: {verdict} ({final:.1f} %)."
    limit = spec.get("train_limit")
    scale = f"alpha {spec.get('alpha')}, " + (
        f"{limit:,} training images" if limit else "all training images"
    )
    return (
        f"Goal: >= {GOAL_PERCENT:.0f} % at alpha 1.0 on all of CIFAR-10: not tested by this sweep ({scale}); "
        "run `orchestrator submit explain --profile paper` for it."
    )


# ---------------------------------------------------------------------------------------------- figures
_PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e", "#7f7f7f")


def _mean_curve(runs: tuple[TrainRun, ...], key: str, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for e in run.epochs:
            value = getattr(e, key)
            if value is not None:
                by_epoch.setdefault(e.epoch, []).append(value * scale)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    return np.array(epochs), np.array([statistics.fmean(by_epoch[e]) for e in epochs])


def _figure(data: ReportData, number: int, key: str) -> FigureSpec:
    accuracy = key == "val_accuracy"
    stem = f"fig{number}_beyond_{'accuracy' if accuracy else 'loss'}"
    title = "Beyond the seed: " + ("validation accuracy" if accuracy else "training loss")
    groups = [*data.train.items(), *data.variants.items()]
    runs = tuple(t.run for _, ts in groups for t in ts)
    caption = (
        f"{'Validation accuracy' if accuracy else 'Training loss'} per epoch of every training of this sweep "
        "(mean over seeds): the seed's three regimes dashed, the controlled changes solid."
    )
    fig = Figure(figsize=(9.0, 4.6))
    ax = fig.add_subplot()
    drawn = False
    colours = iter(_PALETTE)
    for label, ts in groups:
        curve = _mean_curve(ts, key, 100.0 if accuracy else 1.0)
        if curve is None:
            continue
        seed_way = label in data.train
        colour = COLORS.get(label) if seed_way else next(colours, None)
        ax.plot(
            *curve, "--" if seed_way else "-", color=colour, label=label, linewidth=1.4 if seed_way else 1.8
        )
        drawn = True
    if not drawn:
        why = "not available: no training of this sweep has finished an epoch yet"
        return FigureSpec(number, stem, title, caption, placeholder(why), runs, missing=why)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Validation accuracy [%]" if accuracy else "Training loss (categorical cross-entropy)")
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # eight labels: beside the plot
    fig.tight_layout()
    # Under Figs. 1-2 already: the seed's own fine-tuning.
    seed_ft = data.train.get(Regime.FINETUNE, ())
    variants = [t for ts in data.variants.values() for t in ts]
    notes = accuracy_notes(variants, besides=seed_ft) if accuracy else loss_notes(variants, besides=seed_ft)
    return FigureSpec(number, stem, title, caption, fig, runs, notes=notes)


def beyond_figures(data: ReportData, first: int = 9) -> list[FigureSpec]:
    """Figs. 9-10, only for a sweep with variants (the ``explain`` plan)."""
    if not data.variants:
        return []
    return [_figure(data, first, "val_accuracy"), _figure(data, first + 1, "loss")]
