"""How long a plan will take on the device that will run it, from rates measured before it starts.

The rate is, in order of preference: the median speed of earlier epochs recorded in this database for the
same device, width (alpha), input size and batch size; else, on a CPU only, a documented measurement of
the 2-core development CPU (labelled as such in the message). No rate, no estimate: a guess is not given.

Speed is counted in image-equivalents per second: a training image is one, a validation image a third
(a forward pass without the backward pass and update, roughly a third of the work of a training step).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.specs import Regime, TrainSpec
from orchestrator.preflight import Work
from storage.models import EpochMetric, Run, RunKind

# A task in a warm task process (worker.warm): the gap to its claim, the model's build, the data, the
# checkpoints; measured 1.3-4.1 s a task on the 2-core machine (docs/task-overhead.md, "Kept compiled
# models"). Visualizations and the report are counted at this alone.
TASK_SECONDS = 3.0
# The first training phase of a graph traces it (about 8 s of its first epoch on that CPU); the plan's
# later phases of the same graph train on the kept model (worker.experiments.kept_models) and do not.
TRACE_SECONDS = 10.0
# Training images/s measured on the 2-core, no-GPU development machine (TensorFlow 2.21, 32x32, batch 32),
# used when no run in this database measured the device: alpha 1.0 from ../shared/data/README.md (bare
# Keras, 800-1,100 images/s; the low end), alpha 0.25 from the README's Performance table (about 1,000).
DOCUMENTED_CPU_RATES: dict[float, tuple[float, str]] = {
    0.25: (1000.0, "measured with convlab on a 2-core CPU"),
    1.0: (800.0, "measured with bare Keras on a 2-core CPU"),
}
LONG_SECONDS = 15 * 60  # beyond this, say so before starting
_LATEST_EPOCHS = 2000


@dataclass(frozen=True)
class Device:
    """The device the plan will run on. ``prefix`` matches ``Run.device`` of runs measured on it."""

    prefix: str
    words: str
    cpu: bool  # documented CPU rates may stand in for a missing measurement


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: tuple[str, ...]  # one phrase per rate used, saying where it comes from


def local_device() -> Device:
    """This machine, which runs the local worker: its first NVIDIA GPU, else its CPU."""
    from contract.host import cpu_name
    from orchestrator.host import nvidia_gpus

    gpus = nvidia_gpus()
    if gpus:
        return Device(prefix=f"GPU {gpus[0]}", words=f"GPU {gpus[0]}", cpu=False)
    name = cpu_name()
    return Device(prefix=f"CPU {name} (", words=f"this machine's CPU ({name})", cpu=True)


def remote_device(worker_devices: list[str]) -> Device | None:
    """The live workers of a shared broker: their class (GPU if any has one), measured rates only."""
    if not worker_devices:
        return None
    if any(d.startswith("GPU") for d in worker_devices):
        return Device(prefix="GPU", words="the GPU workers", cpu=False)
    return Device(prefix="CPU", words="the CPU workers", cpu=False)


def _units(spec: TrainSpec) -> float:
    train = spec.train_limit if spec.train_limit is not None else 50_000
    val = spec.val_limit if spec.val_limit is not None else 10_000
    return train + val / 3


def _measured_rates(s: Session, device: Device) -> dict[tuple[float, int, int], list[float]]:
    """(alpha, input_size, batch_size) -> image-equivalents/s of recent epochs on ``device``."""
    stmt = (
        select(EpochMetric.epoch, EpochMetric.seconds, Run.spec)
        .join(Run, Run.id == EpochMetric.run_id)
        .where(Run.kind == RunKind.TRAIN, Run.device.like(device.prefix + "%"), EpochMetric.seconds > 0)
        .order_by(EpochMetric.recorded_at.desc())
        .limit(_LATEST_EPOCHS)
    )
    later: dict[tuple[float, int, int], list[float]] = {}
    first: dict[tuple[float, int, int], list[float]] = {}
    for epoch, seconds, raw in s.execute(stmt):
        try:
            spec = TrainSpec.from_dict(raw)
        except (TypeError, ValueError):
            continue
        key = (spec.alpha, spec.input_size, spec.batch_size)
        # A run's first epoch also traces the graph: use it only when nothing else was measured.
        (first if epoch == 1 else later).setdefault(key, []).append(_units(spec) / seconds)
    return {key: later.get(key) or first[key] for key in {*later, *first}}


def estimate(s: Session, work: Iterable[Work], device: Device) -> Estimate | None:
    """Seconds for ``work`` run one after another on ``device``; None when a rate is unknown."""
    measured = _measured_rates(s, device)
    total = 0.0
    basis: list[str] = []
    traced: set[tuple[object, ...]] = set()
    for kind, raw, _label in work:
        total += TASK_SECONDS
        if kind != RunKind.TRAIN:
            continue
        spec = TrainSpec.from_dict(raw)
        rates = measured.get((spec.alpha, spec.input_size, spec.batch_size))
        if rates:
            rate = statistics.median(rates)
            note = f"{rate:,.0f} images/s for alpha {spec.alpha}, measured by {len(rates)} earlier epochs"
        elif device.cpu and spec.alpha in DOCUMENTED_CPU_RATES:
            rate, source = DOCUMENTED_CPU_RATES[spec.alpha]
            note = f"{rate:,.0f} images/s for alpha {spec.alpha}: {source}; no run here measured it yet"
            if spec.input_size != 32:
                # The network resizes its input: its convolutions' work grows with the pixel count.
                rate /= (spec.input_size / 32) ** 2
                size = f"{spec.input_size}x{spec.input_size}"
                note += f"; scaled by the pixel count to {rate:,.0f} images/s at {size}"
        else:
            return None
        if note not in basis:
            basis.append(note)
        # The whole network training (scratch, imagenet, finetune's tune phase) is one graph per width,
        # input, batch, augmentation and BatchNorm mode; the head phase trains the small head alone.
        bn = spec.tune_bn if spec.regime == Regime.FINETUNE else "batch"
        graph = (spec.alpha, spec.input_size, spec.batch_size, spec.augment, bn)
        if graph not in traced:
            traced.add(graph)
            total += TRACE_SECONDS
        total += spec.total_epochs * _units(spec) / rate
    return Estimate(seconds=total, basis=tuple(basis))


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def warning_lines(
    s: Session, work: list[Work], device: Device, alternatives: dict[str, list[Work]]
) -> list[str]:
    """What to say before a long plan starts (nothing for a short one or an unknown rate)."""
    found = estimate(s, work, device)
    if found is None or found.seconds < LONG_SECONDS:
        return []
    lines = [f"estimate: about {duration(found.seconds)} on {device.words} ({'; '.join(found.basis)})"]
    faster: list[str] = []
    for name, other in alternatives.items():
        quicker = estimate(s, other, device)
        if quicker is not None and quicker.seconds < found.seconds:
            faster.append(f"--profile {name} (about {duration(quicker.seconds)})")
    if faster:
        lines.append(f"faster: {', '.join(faster)}")
    return lines
