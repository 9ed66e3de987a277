"""Where a figure or table comes from: sweep, runs, spec hashes, seeds, profile, code, Keras, device, the
compile cache, the training loop, dates.

Keras's version and backend are read from what the worker recorded in ``Run.environment``
(``keras_version``, ``keras_backend``; older records: the run spec); the report never imports Keras.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from report.data import ReportData, RunInfo
from storage.models import RunKind

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Provenance:
    items: tuple[tuple[str, str], ...]  # (name, value), in display order

    def as_text(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.items)


def _recorded(run: RunInfo, key: str) -> str | None:
    value: Any = run.environment.get(key, run.spec.get(key))
    extra = run.spec.get("extra")
    if value is None and isinstance(extra, dict):
        value = extra.get(key)
    return str(value) if value not in (None, "") else None


def _joined(values: Iterable[str | None]) -> str:
    seen = sorted({v for v in values if v})
    return ", ".join(seen) if seen else NOT_RECORDED


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "?"


def provenance(data: ReportData, runs: Iterable[RunInfo], *, sweep_level: bool = True) -> Provenance:
    """Where a section's figures and tables come from. ``sweep_level=False`` leaves out what is the same
    for the whole report (sweep, profile, code): the report's header says it once."""
    runs = list(runs)
    sweep = data.sweep
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(sweep.overrides.items())) or "none"
    run_ids = []
    for r in runs:
        suffix = f" (reuses {r.source_id})" if r.reused else ""
        run_ids.append(f"{r.id} [{r.status}]{suffix}")
    starts = [r.started_at for r in runs if r.started_at]
    ends = [r.finished_at for r in runs if r.finished_at]
    if starts:
        dates = f"{_date(min(starts))} to {_date(max(ends)) if ends else 'still running'}"
    else:
        dates = f"not started (sweep created {_date(sweep.created_at)})"
    head = (("sweep", sweep.id),) if sweep_level else ()
    items = (
        *head,
        ("runs", ", ".join(run_ids) or "none"),
        ("spec hashes", ", ".join(sorted({r.spec_hash[:8] for r in runs if r.spec_hash})) or NOT_RECORDED),
        ("seeds", ", ".join(str(s) for s in sorted({r.seed for r in runs})) or "none"),
        *((("profile", f"{sweep.profile} (overrides: {overrides})"),) if sweep_level else ()),
        *((("code", sweep.code_version or NOT_RECORDED),) if sweep_level else ()),
        ("Keras", _joined(_recorded(r, "keras_version") for r in runs)),
        ("backend", _joined(_recorded(r, "keras_backend") for r in runs)),
        ("device", _joined(r.device for r in runs)),
        ("compile cache", _joined(_recorded(r, "compile_cache") for r in runs)),
        ("training loop", _joined(_recorded(r, "train_loop") for r in runs if r.kind == RunKind.TRAIN)),
        ("dates", dates),
    )
    return Provenance(items=items)
