"""``report.md``: the same content as the HTML, with figures referenced by relative file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.report.data import ReportData
from orchestrator.report.figures import FigureSpec
from orchestrator.report.provenance import Provenance, provenance
from orchestrator.report.tables import TABLE_HEADER, ResultsTable, row_cells


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prov(p: Provenance) -> str:
    return "> " + "; ".join(f"**{k}:** {_cell(v)}" for k, v in p.items)


def _figure(spec: FigureSpec, png: Path, data: ReportData) -> str:
    warn = "⚠ " if spec.placeholder else ""
    return (
        f"![Fig. {spec.number}: {spec.title}]({png.name})\n\n"
        f"{warn}**Fig. {spec.number}:** {spec.caption} ({png.name}, {png.with_suffix('.pdf').name})"
        + (f" **{spec.missing}**" if spec.missing else "")
        + "\n\n"
        + _prov(provenance(data, spec.runs))
        + "\n"
    )


def _table(table: ResultsTable, data: ReportData) -> str:
    lines = [f"> {'✔' if table.comparable else '⚠'} {table.note}", ""]
    lines.append("| " + " | ".join(TABLE_HEADER) + " |")
    lines.append("|" + "---|" * len(TABLE_HEADER))
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c) for c in row_cells(row, table.comparable)) + " |")
    if not table.rows:
        lines.append("| No training runs in this sweep. |" + " |" * (len(TABLE_HEADER) - 1))
    lines.append("")
    errors = [e for row in table.rows for e in row.errors]
    if errors:
        lines.append("Failed or cancelled runs:")
        lines.append("")
        lines.extend(f"- `{_cell(e)}`" for e in errors)
        lines.append("")
    lines.append(
        "Final and best validation accuracy: mean ± standard deviation over seeds (n runs). "
        "Wall time: finished − started, else the sum of the epochs' seconds."
    )
    lines.append("")
    lines.append("### Do the seed's conclusions hold in this sweep?")
    lines.append("")
    qualifier = "" if table.comparable else " (indicative)"
    for c in table.conclusions:
        lines.append(f"- “{c.claim}”: **{c.verdict}**{qualifier} — {c.detail}")
    lines.append("")
    runs = tuple(t.run for ts in data.train.values() for t in ts)
    lines.append(_prov(provenance(data, runs)))
    return "\n".join(lines) + "\n"


def render_markdown(
    data: ReportData,
    table: ResultsTable,
    figures: Sequence[tuple[FigureSpec, Path]],
    warnings: Sequence[str],
) -> str:
    s = data.sweep
    by_number = {spec.number: (spec, png) for spec, png in figures}
    parts = [
        f"# MobileNet + Dense(10) on CIFAR-10 — sweep {s.id}",
        "",
        f"Plan {s.plan}, profile {s.profile}, code {s.code_version}; "
        f"report built {data.loaded_at.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
    ]
    if warnings:
        parts.extend(f"- ⚠ {w}" for w in warnings)
        parts.append("")
    parts.append("## Exercise 3: training regimes\n")
    parts.extend(_figure(*by_number[n], data) for n in (1, 2) if n in by_number)
    parts.append("## Results\n")
    parts.append(_table(table, data))
    parts.append("## Exercise 4: what the last convolutional layers respond to\n")
    parts.extend(_figure(*by_number[n], data) for n in range(3, 9) if n in by_number)
    return "\n".join(parts)
