"""``orchestrator compare``: what differs between sweeps' settings, and their trainings' accuracies side by
side (as ``dvc exp show`` or ``guild compare`` do). Data only: ``compare_view`` lays it out as text.

A sweep's settings are its plan, its code and its profile's values with its ``--set`` overrides applied:
everything one ``submit`` decides for all of its runs. A training is matched across sweeps by its label
(``scratch``, ``imagenet+upscaled``, ...); several seeds of a label are averaged. Accuracies are judged as
the report judges them: the succeeded runs, or, with none, the runs so far, flagged unfinished.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contract.profiles import PROFILES, resolve_profile
from contract.specs import SpecError
from orchestrator.errors import UserError
from orchestrator.results import SweepResults, TrainingResult
from storage.models import RunStatus


@dataclass(frozen=True)
class Accuracy:
    """Validation accuracy (fractions) of one label in one sweep, mean over its runs."""

    final: float | None
    best: float | None
    runs: int
    finished: bool  # every run counted succeeded; False: values so far of unfinished runs


@dataclass(frozen=True)
class Comparison:
    sweeps: tuple[SweepResults, ...]
    differing: tuple[tuple[str, tuple[str, ...]], ...]  # setting -> each sweep's value, where they differ
    same: int  # how many settings every sweep shares
    labels: tuple[str, ...]  # every training label of any sweep, in order of first appearance
    accuracy: Mapping[tuple[str, str], Accuracy]  # (label, sweep id) -> accuracy; absent: no such run


def settings_of(sweep: SweepResults) -> dict[str, str]:
    """The sweep's effective settings as text: plan, profile, code, then every profile key."""
    try:
        values: dict[str, Any] = resolve_profile(sweep.profile, dict(sweep.overrides))
    except SpecError:  # a profile or key this code no longer knows: show what was stored
        values = {**PROFILES.get(sweep.profile, {}), **sweep.overrides}
    head = {"plan": sweep.plan, "profile": sweep.profile, "code": sweep.code_version}
    return {**head, **{k: _text(v) for k, v in values.items()}}


def _text(value: Any) -> str:
    if value is None:
        return "all"  # the only optional settings are the data limits
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _accuracy(runs: Sequence[TrainingResult]) -> Accuracy:
    done = [r for r in runs if r.status == RunStatus.SUCCEEDED and r.final_val_accuracy is not None]
    counted = done or [r for r in runs if r.final_val_accuracy is not None]
    finals = [r.final_val_accuracy for r in counted if r.final_val_accuracy is not None]
    bests = [
        b.val_accuracy for b in (r.best for r in counted) if b is not None and b.val_accuracy is not None
    ]
    return Accuracy(
        final=statistics.fmean(finals) if finals else None,
        best=statistics.fmean(bests) if bests else None,
        runs=len(counted),
        finished=bool(done) and len(done) == len(runs),
    )


def compare(sweeps: Sequence[SweepResults]) -> Comparison:
    if len(sweeps) < 2:
        raise UserError("compare: give two sweeps or more (`orchestrator status` lists the latest)")
    ids = [s.id for s in sweeps]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UserError(f"compare: sweep {repeated[0]} is given twice; give each sweep once")
    settings = [settings_of(s) for s in sweeps]
    keys = list(dict.fromkeys(k for one in settings for k in one))
    differing = tuple(
        (key, tuple(one.get(key, "–") for one in settings))
        for key in keys
        if len({one.get(key, "–") for one in settings}) > 1
    )
    labels = tuple(dict.fromkeys(t.label for s in sweeps for t in s.trainings))
    accuracy = {}
    for sweep in sweeps:
        for label in labels:
            runs = [t for t in sweep.trainings if t.label == label]
            if runs:
                accuracy[(label, sweep.id)] = _accuracy(runs)
    return Comparison(
        sweeps=tuple(sweeps),
        differing=differing,
        same=len(keys) - len(differing),
        labels=labels,
        accuracy=accuracy,
    )
