"""``orchestrator export``: every epoch of a sweep's (or one run's) trainings, one row per run and epoch,
with the run's settings beside the metrics, as CSV or JSON.

The columns: who the row belongs to (``IDENTITY``), the epoch's record (``EpochRecord``'s fields, named as
stored), then each setting of the run's stored spec as ``spec.<key>`` (``spec.lr`` is the learning rate
the run was given, ``lr`` the one the epoch ran at). A setting a run's spec does not hold is empty in CSV
and absent in JSON. JSON is a list of the same flat rows, so ``pandas.read_json`` and ``read_csv`` give
the same table.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from contract.records import EpochRecord
from orchestrator.results import SweepResults

FORMATS = ("csv", "json")
IDENTITY = ("sweep_id", "run_id", "label", "status", "reused_from")
SPEC_PREFIX = "spec."


def rows(results: SweepResults) -> list[dict[str, Any]]:
    """One flat dict per training and epoch, in the sweep's order, then by epoch."""
    out = []
    for t in results.trainings:
        identity = {
            "sweep_id": results.id or None,
            "run_id": t.run_id,
            "label": t.label,
            "status": t.status.value,
            "reused_from": t.source_id if t.reused else None,
        }
        settings = {f"{SPEC_PREFIX}{k}": _plain(v) for k, v in sorted(t.spec.items())}
        out += [{**identity, **e.to_dict(), **settings} for e in t.epochs]
    return out


def columns(results: SweepResults) -> list[str]:
    """The header: identity, the epoch's fields, then every setting any of the runs holds (sorted)."""
    keys = sorted({k for t in results.trainings for k in t.spec})
    return [*IDENTITY, *EpochRecord.field_names(), *(f"{SPEC_PREFIX}{k}" for k in keys)]


def _plain(value: Any) -> Any:
    """A list setting (``layers``) as one cell: its JSON text."""
    return json.dumps(value) if isinstance(value, list | tuple | dict) else value


def render(results: SweepResults, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(columns(results), rows(results))
    if fmt == "json":
        return json.dumps(rows(results), indent=1, default=str) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def to_csv(header: Sequence[str], table: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in table:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()
