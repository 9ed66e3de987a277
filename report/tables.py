"""The results table (one row per regime) and its comparison with the seed's reported values.

Accuracies are stored as fractions (Keras's metrics); the table shows percent and differences in points.
Final and best values are taken over succeeded runs; a regime with none succeeded yet shows its runs so far,
flagged ``partial``. The seed's conclusions are judged on succeeded runs only: a cancelled or still running
run's last epoch is not its result.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from contract.specs import Regime
from contract.wording import counted
from report.data import REGIME_ORDER, ReportData, RunInfo, TrainRun
from report.failures import NO_MESSAGE, reached
from storage.models import ENDED_BADLY, RunStatus

REGIME_LABELS: dict[str, str] = {Regime.SCRATCH: "Rand.", Regime.IMAGENET: "Imag.", Regime.FINETUNE: "FT"}
REGIME_NAMES: dict[str, str] = {
    Regime.SCRATCH: "random init",
    Regime.IMAGENET: "ImageNet init",
    Regime.FINETUNE: "fine-tuning",
}
PAPER_PROFILE = "paper"
FT_TOLERANCE_POINTS = 5.0


SEED_EPOCHS = 60  # every regime of the seed trains 60 epochs


@dataclass(frozen=True)
class SeedValue:
    final_percent: float
    text: str
    # (epoch, validation accuracy in percent) where the seed states a value: Fig. 1 marks them.
    points: tuple[tuple[int, float], ...] = ()


# What the seed reports (Exercise 3, Figs. 1-2).
SEED_VALUES: dict[str, SeedValue] = {
    Regime.SCRATCH: SeedValue(35.4, "35.4 % after 60 epochs", ((SEED_EPOCHS, 35.4),)),
    Regime.IMAGENET: SeedValue(
        78.0, "starts near 38 %, reaches about 78 %", ((1, 38.0), (SEED_EPOCHS, 78.0))
    ),
    Regime.FINETUNE: SeedValue(78.0, "ends near 78 %, the same as ImageNet", ((SEED_EPOCHS, 78.0),)),
}


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def text(self) -> str:
        return (
            f"{self.mean:.1f} ± {self.std:.1f} % (n={self.n})" if self.n > 1 else f"{self.mean:.1f} % (n=1)"
        )


@dataclass(frozen=True)
class RegimeRow:
    regime: str
    label: str
    runs: int
    statuses: tuple[RunStatus, ...]
    final: Stat | None  # succeeded runs; with none, the runs so far (``partial``)
    best: Stat | None
    partial: bool
    epochs_done: int
    epochs_total: int
    seconds: float | None  # mean wall time per run
    images_per_second: float | None
    devices: tuple[str, ...]
    errors: tuple[str, ...]  # "r-… failed: message" for failed runs
    seed_value: SeedValue
    diff_points: float | None
    finished: Stat | None = None  # final val. accuracy of the succeeded runs alone: what is judged
    unfinished: tuple[RunInfo, ...] = ()  # runs left out of ``finished`` (cancelled, failed, running)
    cancelled: tuple[str, ...] = ()  # "r-… cancelled after epoch 2 of 8" for cancelled runs


@dataclass(frozen=True)
class Conclusion:
    claim: str
    holds: bool | None  # None: not judged (a regime has no finished run; ``detail`` says which)
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not judged"}[self.holds]


@dataclass(frozen=True)
class ResultsTable:
    rows: tuple[RegimeRow, ...]
    conclusions: tuple[Conclusion, ...]
    comparable: bool
    note: str


def _stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    percents = [100.0 * v for v in values]
    std = statistics.stdev(percents) if len(percents) > 1 else 0.0
    return Stat(mean=statistics.fmean(percents), std=std, n=len(percents))


def regime_row(regime: str, runs: tuple[TrainRun, ...]) -> RegimeRow:
    done = [r for r in runs if r.run.succeeded and r.final_val_accuracy is not None]
    partial = not done or len(done) < len(runs)
    counted = done or [r for r in runs if r.final_val_accuracy is not None]
    final = _stat([r.final_val_accuracy for r in counted if r.final_val_accuracy is not None])
    best = _stat([r.best_val_accuracy for r in counted if r.best_val_accuracy is not None])
    seconds = [s for s in (r.seconds for r in runs) if s is not None]
    ips = [x for x in (r.mean_images_per_second for r in runs) if x is not None]
    seed_value = SEED_VALUES[regime] if regime in SEED_VALUES else SeedValue(float("nan"), "not reported")
    return RegimeRow(
        regime=regime,
        label=REGIME_LABELS.get(regime, regime),
        runs=len(runs),
        statuses=tuple(r.run.status for r in runs),
        final=final,
        best=best,
        partial=partial,
        epochs_done=sum(r.epochs_done for r in runs),
        epochs_total=sum(r.run.total_epochs for r in runs),
        seconds=statistics.fmean(seconds) if seconds else None,
        images_per_second=statistics.fmean(ips) if ips else None,
        devices=tuple(sorted({r.run.device for r in runs if r.run.device})),
        errors=tuple(
            f"{r.run.id} failed: {r.run.error or NO_MESSAGE}"
            for r in runs
            if r.run.status == RunStatus.FAILED
        ),
        seed_value=seed_value,
        diff_points=final.mean - seed_value.final_percent if final and regime in SEED_VALUES else None,
        finished=_stat([r.final_val_accuracy for r in done if r.final_val_accuracy is not None]),
        unfinished=tuple(r.run for r in runs if r.run.id not in {d.run.id for d in done}),
        cancelled=tuple(
            f"{r.run.id} cancelled {reached(r.run)}" for r in runs if r.run.status == RunStatus.CANCELLED
        ),
    )


def _not_judged(claim: str, rows: dict[str, RegimeRow], regimes: tuple[str, ...]) -> Conclusion | None:
    """A conclusion that cannot be judged because a regime it compares has no finished run: which runs
    are unfinished, and how far they got. None when every regime has one."""
    missing = []
    for regime in regimes:
        row = rows.get(regime)
        name = REGIME_NAMES.get(regime, regime)
        if row is None:
            missing.append(f"{name} has no run in this sweep")
        elif row.finished is None:
            ends = "; ".join(f"{r.id} {_how_far(r)}" for r in row.unfinished) or "no run"
            missing.append(f"{name} is unfinished ({ends})")
    if not missing:
        return None
    return Conclusion(claim, None, "; ".join(missing))


def _how_far(run: RunInfo) -> str:
    if run.status in ENDED_BADLY:
        return f"{run.status} {reached(run)}"
    return f"{run.status}, {run.last_epoch} of {run.total_epochs} epochs so far"


def _left_out(*rows: RegimeRow) -> str:
    """Which runs a judged conclusion leaves out because they did not finish."""
    n = sum(len(r.unfinished) for r in rows)
    return f"; {counted(n, 'unfinished run')} left out" if n else ""


def conclusions(rows: dict[str, RegimeRow]) -> tuple[Conclusion, ...]:
    """The seed's two findings, checked on the final validation accuracy of succeeded runs (mean over
    seeds); a run cancelled, failed or still running is not judged on."""
    scratch, imagenet, finetune = REGIME_ORDER
    beats = _not_judged("ImageNet init beats random init", rows, (imagenet, scratch))
    if beats is None:
        s, i = rows[scratch].finished, rows[imagenet].finished
        assert s is not None and i is not None
        beats = Conclusion(
            "ImageNet init beats random init",
            i.mean > s.mean,
            f"final val. accuracy: ImageNet {i.mean:.1f} % vs random {s.mean:.1f} % "
            f"({i.mean - s.mean:+.1f} points{_left_out(rows[scratch], rows[imagenet])})",
        )
    near = _not_judged("FT ends near ImageNet", rows, (finetune, imagenet))
    if near is None:
        f, i = rows[finetune].finished, rows[imagenet].finished
        assert f is not None and i is not None
        gap = f.mean - i.mean
        left_out = _left_out(rows[finetune], rows[imagenet])
        near = Conclusion(
            "FT ends near ImageNet",
            abs(gap) <= FT_TOLERANCE_POINTS + 1e-9,  # floating point: 55.0 - 50.0 may be 5.000000000000007
            f"final val. accuracy: FT {f.mean:.1f} % vs ImageNet {i.mean:.1f} % ({gap:+.1f} points; "
            f"'near' means within {FT_TOLERANCE_POINTS:.0f} points{left_out})",
        )
    return beats, near


def results_table(data: ReportData) -> ResultsTable:
    rows = {regime: regime_row(regime, runs) for regime, runs in data.train.items() if runs}
    profile = data.sweep.profile
    overrides = dict(data.sweep.overrides)
    if profile == PAPER_PROFILE and not overrides:
        comparable = True
        note = "Profile 'paper' reproduces the seed's setup: the seed's values are directly comparable."
    elif profile == PAPER_PROFILE:
        comparable = False
        changed = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        note = (
            f"Profile 'paper' with overrides ({changed}): the setup differs from the seed's, so the "
            "seed's numbers are not compared with it; whether the seed's qualitative findings hold is "
            "indicative only."
        )
    else:
        comparable = False
        note = (
            f"Profile '{profile}' is not the seed's setup (smaller network, fewer images or epochs): the "
            "seed's numbers are NOT comparable and are not shown (only profile 'paper' compares with "
            "them). Whether the seed's qualitative findings hold is indicative only."
        )
    ordered = tuple(rows[r] for r in [*REGIME_ORDER, *sorted(set(rows) - set(REGIME_ORDER))] if r in rows)
    return ResultsTable(rows=ordered, conclusions=conclusions(rows), comparable=comparable, note=note)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def row_cells(row: RegimeRow, comparable: bool) -> list[str]:
    """The table's cells as text, shared by the HTML and Markdown renderers. The seed's values and the
    difference to them only for a comparable sweep (profile paper, no overrides): elsewhere the report
    itself says they are not comparable, so it does not print the numbers."""
    final = row.final.text() if row.final else "–"
    if row.final and row.partial:
        final += " (so far)" if RunStatus.SUCCEEDED not in row.statuses else " (succeeded runs)"
    diff = f"{row.diff_points:+.1f}" if row.diff_points is not None else "–"
    status = ", ".join(f"{row.statuses.count(s)} {s}" for s in sorted(set(row.statuses)))
    cells = [
        f"{row.label} ({REGIME_NAMES.get(row.regime, row.regime)})",
        status,
        final,
        row.best.text() if row.best else "–",
        f"{row.epochs_done}/{row.epochs_total}",
        format_seconds(row.seconds),
        f"{row.images_per_second:.0f}" if row.images_per_second is not None else "–",
        ", ".join(row.devices) or "not recorded",
    ]
    return [*cells, row.seed_value.text, diff] if comparable else cells


def table_header(comparable: bool) -> list[str]:
    return TABLE_HEADER if comparable else TABLE_HEADER[:-2]


TABLE_HEADER = [
    "Regime",
    "Runs",
    "Final val. acc.",
    "Best val. acc.",
    "Epochs done/total",
    "Wall time per run",
    "Images/s",
    "Device",
    "Seed reports",
    "Δ final vs seed (points)",
]
