"""The report's outline: which sections it has, in which order, with what in them, decided once.

``render_html`` and ``render_markdown`` walk the same list of items and only say how each kind of item
looks in their format, so the two documents cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report.beyond import BeyondTable
from report.data import ReportData
from report.failures import Failure, cancellation_line, cancellations
from report.figures import FigureSpec
from report.sections import placeholder_line, runs_of
from report.settings import SettingsTable
from report.tables import ResultsTable

# Figures of Exercise 3 (training curves), Exercise 4 (visualizations) and "Beyond the seed".
TRAINING_FIGURES = (1, 2)
VISUALIZATION_FIGURES = tuple(range(3, 9))


@dataclass(frozen=True)
class Item:
    """One piece of the document: ``kind`` names how to render ``value``.

    Kinds: ``warnings`` (list of str), ``heading`` (level, text), ``settings`` (SettingsTable), ``failures``
    (list of Failure), ``cancelled`` (one line per cancelled run), ``figure`` (FigureSpec, png path),
    ``results`` (ResultsTable), ``provenance`` (the runs a section shows), ``beyond`` (BeyondTable, its
    figures).
    """

    kind: str
    value: Any


def outline(
    data: ReportData,
    table: ResultsTable,
    figures: Sequence[tuple[FigureSpec, Path]],
    warnings: Sequence[str],
    *,
    settings: SettingsTable,
    fails: Sequence[Failure],
    beyond: BeyondTable | None,
) -> list[Item]:
    by_number = {spec.number: (spec, png) for spec, png in figures}
    items: list[Item] = []
    notes = [*[w for w in warnings if not w.startswith("Fig. ")], *placeholder_line(figures)]
    if notes:
        items.append(Item("warnings", notes))
    items += [Item("heading", (2, "Settings")), Item("settings", settings)]
    if fails:
        items.append(Item("failures", list(fails)))
    cancelled = cancellations(data)
    if cancelled:
        items.append(Item("cancelled", [cancellation_line(r) for r in cancelled]))
    items.append(Item("heading", (2, "Exercise 3: training regimes")))
    items += [Item("figure", by_number[n]) for n in TRAINING_FIGURES if n in by_number]
    items += [
        Item("heading", (3, "Results")),
        Item("results", table),
        Item("provenance", runs_of(data.train)),
    ]
    if any(n in by_number for n in VISUALIZATION_FIGURES):
        items.append(Item("heading", (2, "Exercise 4: what the last convolutional layers respond to")))
        items += [Item("figure", by_number[n]) for n in VISUALIZATION_FIGURES if n in by_number]
        items.append(Item("provenance", runs_of(data.visualizations)))
    if beyond is not None:
        later = [by_number[n] for n in sorted(by_number) if n > max(VISUALIZATION_FIGURES)]
        items.append(Item("beyond", (beyond, later)))
    return items
