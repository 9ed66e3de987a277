"""``report.md``: the same content as the HTML, with figures referenced by relative file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from contract.wording import counted
from report.beyond import BeyondTable
from report.data import ReportData, RunInfo
from report.failures import Failure
from report.figures import FigureSpec
from report.outline import Item
from report.provenance import Provenance, provenance
from report.sections import (
    BEYOND_HEADER,
    FAILED_OR_CANCELLED,
    QUESTIONS,
    WALL_TIME,
    beyond_cells,
    cancelled_intro,
    runs_of,
)
from report.settings import SettingsTable
from report.tables import ResultsTable, row_cells, table_header


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prov(p: Provenance) -> str:
    return "> " + "; ".join(f"**{k}:** {_cell(v)}" for k, v in p.items)


def _section_prov(data: ReportData, runs: Sequence[RunInfo]) -> str:
    return _prov(provenance(data, runs, sweep_level=False)) + "\n" if runs else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _figure(spec: FigureSpec, png: Path) -> str:
    warn = "⚠ " if spec.placeholder else ""
    notes = "".join(f"\n{n}\n" for n in spec.notes)
    return (
        f"![Fig. {spec.number}: {spec.title}]({png.name})\n\n"
        f"{warn}**Fig. {spec.number}:** {spec.caption} ({png.name}, {png.with_suffix('.pdf').name})"
        + (f" **{spec.missing}**" if spec.missing else "")
        + "\n"
        + notes
    )


def _settings(table: SettingsTable) -> str:
    rows = []
    for heading, settings in table.groups:
        rows.append([f"**{heading}**", "", ""])
        for s in settings:
            mark = "✱ " if s.overridden else ""
            rows.append([s.name, f"{mark}{s.value}", f"{mark}{s.source}"])
    lines = _table(["Setting", "Value (every run of this sweep)", "From"], rows)
    lines.append("")
    lines.append(
        "✱: set with `--set`, overriding the profile (whose value is given). “plan”: changed by the plan "
        "itself for some runs, as the value cell says."
    )
    return "\n".join(lines) + "\n"


def _failures(fails: Sequence[Failure]) -> str:
    lines = ["## Failures", ""]
    for f in fails:
        runs = counted(f.count, "run")
        lines.append(
            f"{f.number}. **Error {f.number}** — {runs} {f.status}: `{_cell(f.message)}` ({f.run_list()})"
        )
    return "\n".join(lines) + "\n"


def _cancelled(lines: Sequence[str], data: ReportData) -> str:
    body = [f"- {_cell(line)}" for line in lines]
    return "\n".join(["## Cancelled", "", cancelled_intro(data.sweep.id), "", *body]) + "\n"


def _results(table: ResultsTable) -> str:
    lines = [f"> {'✔' if table.comparable else '⚠'} {table.note}", ""]
    header = table_header(table.comparable)
    rows = [row_cells(row, table.comparable) for row in table.rows]
    if not rows:
        rows = [["No training runs in this sweep.", *[""] * (len(header) - 1)]]
    lines += _table(header, rows)
    lines.append("")
    lines.append(
        "Final and best validation accuracy: mean ± standard deviation over seeds (n runs). "
        f"Wall time: {WALL_TIME}. {FAILED_OR_CANCELLED}"
    )
    lines.append("")
    lines.append("#### Do the seed's conclusions hold in this sweep?")
    lines.append("")
    for c in table.conclusions:
        qualifier = "" if table.comparable or c.holds is None else " (indicative)"
        lines.append(f"- “{c.claim}”: **{c.verdict}**{qualifier} — {c.detail}")
    return "\n".join(lines) + "\n"


def _beyond(table: BeyondTable, figures: Sequence[tuple[FigureSpec, Path]], data: ReportData) -> str:
    lines = ["## Beyond the seed", "", "The seed leaves two questions open:", ""]
    lines += [f"- {q}" for q in QUESTIONS]
    lines += [
        "",
        "The explain plan answers them with controlled runs beside the seed's three regimes: each changes "
        "one thing (or combines them) and takes everything else from the same profile (data, seeds, epochs, "
        "learning rates).",
        "",
        "### What this sweep measured",
        "",
        *[f"- {a}" for a in table.answers],
        "",
        "### What each change bought",
        "",
        *_table(BEYOND_HEADER, [beyond_cells(r) for r in table.rows]),
        "",
    ]
    lines += [_figure(spec, png) for spec, png in figures]
    lines.append(_section_prov(data, runs_of(data.variants)))
    return "\n".join(lines)


def render_markdown(data: ReportData, items: Sequence[Item]) -> str:
    """The document for ``items`` (see :func:`report.outline.outline`)."""
    s = data.sweep
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(s.overrides.items())) or "none"
    parts = [
        f"# MobileNet + Dense(10) on CIFAR-10 — sweep {s.id}",
        "",
        f"Plan {s.plan}, profile {s.profile} (overrides: {overrides}), code {s.code_version}; "
        f"report built {data.loaded_at.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
    ]
    render = {
        "warnings": lambda notes: "\n".join(f"- ⚠ {w}" for w in notes) + "\n",
        "heading": lambda h: f"{'#' * h[0]} {h[1]}\n",
        "settings": _settings,
        "failures": _failures,
        "cancelled": lambda lines: _cancelled(lines, data),
        "figure": lambda f: _figure(*f),
        "results": _results,
        "provenance": lambda runs: _section_prov(data, runs),
        "beyond": lambda b: _beyond(b[0], b[1], data),
    }
    parts.extend(render[item.kind](item.value) for item in items)
    return "\n".join(parts)
