"""``report.html``: one self-contained file (base64 data-URI figures, inline CSS, no external requests)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from orchestrator.report.data import ReportData
from orchestrator.report.figures import FigureSpec
from orchestrator.report.provenance import Provenance, provenance
from orchestrator.report.tables import TABLE_HEADER, ResultsTable, row_cells

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 1100px; margin: 0 auto; padding: 1.5rem; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta, .prov { color: #555; font-size: .82rem; }
.prov { background: #f6f6f6; border-left: 3px solid #bbb; padding: .4rem .6rem; margin: .4rem 0 1.2rem;
        word-break: break-word; }
.prov b { color: #333; font-weight: 600; }
figure { margin: 1.2rem 0 .2rem; page-break-inside: avoid; break-inside: avoid; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; margin-top: .3rem; }
.placeholder figcaption::before { content: "⚠ "; color: #b26a00; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .3rem .45rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.note { background: #fff8e1; border: 1px solid #f0d58c; padding: .5rem .7rem; }
.note.ok { background: #eef7ee; border-color: #b5d6b5; }
.error { color: #a40000; font-family: ui-monospace, monospace; font-size: .8rem; white-space: pre-wrap; }
.holds { color: #176b17; font-weight: 600; } .fails { color: #a40000; font-weight: 600; }
.unknown { color: #8a6d00; font-weight: 600; }
.warnings { color: #8a4b00; font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  h2 { page-break-after: avoid; break-after: avoid; }
  .table-wrap { overflow: visible; }
  table { font-size: 8pt; }
  figure img { max-height: 80vh; width: auto; border: 0; }
  .prov { background: none; }
}
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _prov(p: Provenance) -> str:
    items = "; ".join(f"<b>{escape(k)}:</b> {escape(v)}" for k, v in p.items)
    return f'<div class="prov">{items}</div>'


def _figure(spec: FigureSpec, png: Path, data: ReportData) -> str:
    cls = ' class="placeholder"' if spec.placeholder else ""
    return (
        f'<figure id="{spec.stem}"{cls}><img src="{data_uri(png)}" alt="{escape(spec.title)}">'
        f"<figcaption><b>Fig. {spec.number}:</b> {escape(spec.caption)}"
        + (f' <span class="error">{escape(spec.missing)}</span>' if spec.missing else "")
        + f' <span class="meta">({escape(spec.stem)}.png / .pdf)</span></figcaption></figure>'
        + _prov(provenance(data, spec.runs))
    )


def _table(table: ResultsTable, data: ReportData) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in TABLE_HEADER)
    body = []
    for row in table.rows:
        cells = "".join(f"<td>{escape(c)}</td>" for c in row_cells(row, table.comparable))
        body.append(f"<tr>{cells}</tr>")
        for err in row.errors:
            body.append(
                f'<tr><td></td><td colspan="{len(TABLE_HEADER) - 1}" class="error">{escape(err)}</td></tr>'
            )
    if not table.rows:
        body.append(f'<tr><td colspan="{len(TABLE_HEADER)}">No training runs in this sweep.</td></tr>')
    note_cls = "note ok" if table.comparable else "note"
    verdicts = []
    for c in table.conclusions:
        cls = {True: "holds", False: "fails", None: "unknown"}[c.holds]
        qualifier = "" if table.comparable else " (indicative)"
        verdicts.append(
            f'<li>“{escape(c.claim)}”: <span class="{cls}">{escape(c.verdict)}</span>{qualifier} — '
            f"{escape(c.detail)}</li>"
        )
    runs = tuple(t.run for ts in data.train.values() for t in ts)
    return (
        f'<p class="{note_cls}">{escape(table.note)}</p>'
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        "<p>Final and best validation accuracy: mean ± standard deviation over seeds (n runs). "
        "Wall time: finished − started, else the sum of the epochs' seconds.</p>"
        f"<h3>Do the seed's conclusions hold in this sweep?</h3><ul>{''.join(verdicts)}</ul>"
        + _prov(provenance(data, runs))
    )


def render_html(
    data: ReportData,
    table: ResultsTable,
    figures: Sequence[tuple[FigureSpec, Path]],
    warnings: Sequence[str],
) -> str:
    s = data.sweep
    by_number = {spec.number: (spec, png) for spec, png in figures}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>convlab report — sweep {escape(s.id)}</title><style>{CSS}</style></head><body>",
        f"<h1>MobileNet + Dense(10) on CIFAR-10 — sweep {escape(s.id)}</h1>",
        f'<p class="meta">Plan {escape(s.plan)}, profile {escape(s.profile)}, code {escape(s.code_version)}; '
        f"report built {escape(data.loaded_at.strftime('%Y-%m-%d %H:%M %Z'))}.</p>",
    ]
    if warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
        parts.append(f'<ul class="warnings">{items}</ul>')
    parts.append("<h2>Exercise 3: training regimes</h2>")
    for n in (1, 2):
        if n in by_number:
            parts.append(_figure(*by_number[n], data))
    parts.append("<h2>Results</h2>")
    parts.append(_table(table, data))
    parts.append("<h2>Exercise 4: what the last convolutional layers respond to</h2>")
    for n in range(3, 9):
        if n in by_number:
            parts.append(_figure(*by_number[n], data))
    parts.append("</body></html>")
    return "\n".join(parts)
