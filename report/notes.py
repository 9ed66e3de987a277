"""Comments a reader of the fine-tuning curves will ask for, with this sweep's numbers.

Two things stand out in the seed's way of fine-tuning, and the figures say why where they show them:
validation accuracy near or below chance while only the head trains, and a jump of the training loss when
the base is unfrozen (BatchNorm switches from its ImageNet moving averages to batch statistics).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from contract.specs import Regime
from report.data import TrainRun

CHANCE = 0.10  # ten balanced classes
JUMP = 1.05  # a rise of more than 5 % of the loss is called a jump


def _by_label(runs: Iterable[TrainRun]) -> dict[str, list[TrainRun]]:
    grouped: dict[str, list[TrainRun]] = {}
    for run in runs:
        if run.regime == Regime.FINETUNE and run.epochs:
            grouped.setdefault(run.label, []).append(run)
    return grouped


def _mean_at(runs: list[TrainRun], epoch: int, key: str) -> float | None:
    values = [
        getattr(e, key) for r in runs for e in r.epochs if e.epoch == epoch and getattr(e, key) is not None
    ]
    return statistics.fmean(values) if values else None


def _head_epochs(runs: list[TrainRun]) -> list[int]:
    return sorted({e.epoch for r in runs for e in r.epochs if e.phase == "head"})


def _several(runs: list[TrainRun]) -> str:
    return f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""


def _new(notes: list[tuple[str, str]], shown: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """``label: text`` for each note whose label and text another figure has not shown already (a
    variant whose head-only phase is the seed's run's is the same curve)."""
    seen_labels, seen_texts = set(), set()
    for label, text in shown:
        seen_labels.add(label)
        seen_texts.add(text)
    return tuple(
        f"{label}: {text}" for label, text in notes if label not in seen_labels and text not in seen_texts
    )


def accuracy_notes(runs: Iterable[TrainRun], *, besides: Iterable[TrainRun] = ()) -> tuple[str, ...]:
    """Validation accuracy at or below chance during the head-only phase; ``besides``: runs whose notes
    another figure shows (not repeated)."""
    return _new(_accuracy(runs), _accuracy(besides))


def loss_notes(runs: Iterable[TrainRun], *, besides: Iterable[TrainRun] = ()) -> tuple[str, ...]:
    """The training loss from the last head-only epoch to the first with the base unfrozen."""
    return _new(_loss(runs), _loss(besides))


def _accuracy(runs: Iterable[TrainRun]) -> list[tuple[str, str]]:
    notes = []
    for label, group in _by_label(runs).items():
        heads = _head_epochs(group)
        values = [v for v in (_mean_at(group, e, "val_accuracy") for e in heads) if v is not None]
        if not values or max(values) > CHANCE:
            continue
        size = group[0].run.spec.get("input_size", 32)
        why = (
            " With the base frozen, its BatchNorm layers normalize with their ImageNet statistics, and at "
            "32×32 inputs the base's last feature map is 1×1: the head gets features that barely tell the "
            "classes apart (the upscaled runs of the explain plan test this)."
            if size == 32
            else ""
        )
        span = (
            f"{100 * min(values):.1f}-{100 * max(values):.1f} %"
            if len(values) > 1
            else f"{100 * values[0]:.1f} %"
        )
        notes.append(
            (
                label,
                f"during the head-only phase (epochs {heads[0]}-{heads[-1]}) validation accuracy stays at "
                f"{span}{_several(group)}, not above chance (10 % for ten balanced classes).{why}",
            )
        )
    return notes


def _loss(runs: Iterable[TrainRun]) -> list[tuple[str, str]]:
    notes = []
    for label, group in _by_label(runs).items():
        heads = _head_epochs(group)
        if not heads:
            continue
        last = heads[-1]
        before, after = _mean_at(group, last, "loss"), _mean_at(group, last + 1, "loss")
        if before is None or after is None:
            continue
        mode = group[0].run.spec.get("tune_bn", "batch")
        change = (
            f"from {before:.2f} (epoch {last}, last head-only) to {after:.2f} (epoch {last + 1})"
            f"{_several(group)}"
        )
        if mode == "frozen":
            notes.append(
                (
                    label,
                    f"with BatchNorm kept frozen, the training loss goes {change} when the base is unfrozen.",
                )
            )
        elif after > JUMP * before:
            notes.append(
                (
                    label,
                    f"the training loss jumps {change} when the base is unfrozen. From then on its BatchNorm "
                    "layers normalize with the statistics of each batch of CIFAR-10 images instead of their "
                    "ImageNet moving averages, and update those averages: the engine's default, and most "
                    "likely what the seed's Keras code did (it unfroze the base without training=False).",
                )
            )
    return notes
