"""``report.html``: one self-contained file (base64 data-URI figures, inline CSS, no external requests).

Sections: settings, failures (each distinct error once), Exercise 3 (Figs. 1-2, results), Exercise 4 (Figs.
3-8, when the sweep visualizes), Beyond the seed (when it has the explain plan's variants). One provenance
block per section; what is the same for the whole sweep (profile, overrides, code) is said once at the top.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
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
from report.webimage import web_png

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
.fignote { font-size: .85rem; margin: .2rem 0; color: #333; }
.placeholder figcaption::before { content: "⚠ "; color: #b26a00; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .3rem .45rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.group { background: #fafafa; font-weight: 600; }
td.override { background: #fff3cd; }
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
    """The figure as the page shows it: a PNG sized for the screen (the full-size PNG and the PDF stay
    on disk beside the report)."""
    return "data:image/png;base64," + base64.b64encode(web_png(path)).decode("ascii")


def _prov(p: Provenance) -> str:
    items = "; ".join(f"<b>{escape(k)}:</b> {escape(v)}" for k, v in p.items)
    return f'<div class="prov">{items}</div>'


def _section_prov(data: ReportData, runs: Sequence[RunInfo]) -> str:
    return _prov(provenance(data, runs, sweep_level=False)) if runs else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(spec: FigureSpec, png: Path) -> str:
    cls = ' class="placeholder"' if spec.placeholder else ""
    notes = "".join(f'<p class="fignote">{escape(n)}</p>' for n in spec.notes)
    return (
        f'<figure id="{spec.stem}"{cls}><img src="{data_uri(png)}" alt="{escape(spec.title)}">'
        f"<figcaption><b>Fig. {spec.number}:</b> {escape(spec.caption)}"
        + (f' <span class="error">{escape(spec.missing)}</span>' if spec.missing else "")
        + f' <span class="meta">({escape(spec.stem)}.png / .pdf)</span></figcaption></figure>'
        + notes
    )


def _settings(table: SettingsTable) -> str:
    rows = []
    for heading, settings in table.groups:
        rows.append(f'<tr><td class="group" colspan="3">{escape(heading)}</td></tr>')
        for s in settings:
            mark = ' class="override"' if s.overridden else ""
            rows.append(
                f"<tr><td>{escape(s.name)}</td><td{mark}>{escape(s.value)}</td>"
                f"<td{mark}>{escape(s.source)}</td></tr>"
            )
    return (
        '<div class="table-wrap"><table><thead><tr><th>Setting</th><th>Value (every run of this sweep)'
        f"</th><th>From</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="meta">Highlighted: set with <code>--set</code>, overriding the profile (whose value is '
        "given). “plan”: changed by the plan itself for some runs, as the value cell says.</p>"
    )


def _failures(fails: Sequence[Failure]) -> str:
    items = "".join(
        f"<li><b>Error {f.number}</b> — {counted(f.count, 'run')} {escape(f.status)}: "
        f'<span class="error">{escape(f.message)}</span><br><span class="meta">{escape(f.run_list())}'
        "</span></li>"
        for f in fails
    )
    return f"<h2>Failures</h2><ol>{items}</ol>"


def _cancelled(lines: Sequence[str], data: ReportData) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f"<h2>Cancelled</h2><p>{escape(cancelled_intro(data.sweep.id))}</p><ul>{items}</ul>"


def _results(table: ResultsTable) -> str:
    rows = [row_cells(row, table.comparable) for row in table.rows]
    header = table_header(table.comparable)
    if not rows:
        rows = [["No training runs in this sweep.", *[""] * (len(header) - 1)]]
    note_cls = "note ok" if table.comparable else "note"
    verdicts = []
    for c in table.conclusions:
        cls = {True: "holds", False: "fails", None: "unknown"}[c.holds]
        qualifier = "" if table.comparable or c.holds is None else " (indicative)"
        verdicts.append(
            f'<li>“{escape(c.claim)}”: <span class="{cls}">{escape(c.verdict)}</span>{qualifier} — '
            f"{escape(c.detail)}</li>"
        )
    return (
        f'<p class="{note_cls}">{escape(table.note)}</p>'
        + _table(header, rows)
        + "<p>Final and best validation accuracy: mean ± standard deviation over seeds (n runs). "
        f"Wall time: {WALL_TIME}. {FAILED_OR_CANCELLED}</p>"
        f"<h3>Do the seed's conclusions hold in this sweep?</h3><ul>{''.join(verdicts)}</ul>"
    )


def _beyond(table: BeyondTable, figures: Sequence[tuple[FigureSpec, Path]], data: ReportData) -> str:
    questions = "".join(f"<li>{escape(q)}</li>" for q in QUESTIONS)
    answers = "".join(f"<li>{escape(a)}</li>" for a in table.answers)
    return (
        "<h2>Beyond the seed</h2>"
        f"<p>The seed leaves two questions open:</p><ul>{questions}</ul>"
        "<p>The explain plan answers them with controlled runs beside the seed's three regimes: each "
        "changes one thing (or combines them) and takes everything else from the same profile (data, "
        "seeds, epochs, learning rates).</p>"
        f"<h3>What this sweep measured</h3><ul>{answers}</ul>"
        "<h3>What each change bought</h3>"
        + _table(BEYOND_HEADER, [beyond_cells(r) for r in table.rows])
        + "".join(_figure(spec, png) for spec, png in figures)
        + _section_prov(data, runs_of(data.variants))
    )


def render_html(data: ReportData, items: Sequence[Item]) -> str:
    """The document for ``items`` (see :func:`report.outline.outline`)."""
    s = data.sweep
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(s.overrides.items())) or "none"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>convlab report — sweep {escape(s.id)}</title><style>{CSS}</style></head><body>",
        f"<h1>MobileNet + Dense(10) on CIFAR-10 — sweep {escape(s.id)}</h1>",
        f'<p class="meta">Plan {escape(s.plan)}, profile {escape(s.profile)} '
        f"(overrides: {escape(overrides)}), code {escape(s.code_version)}; report built "
        f"{escape(data.loaded_at.strftime('%Y-%m-%d %H:%M %Z'))}. Figures are embedded at screen size as "
        "256-colour PNGs; the full-colour PNG and the PDF of each are beside this file.</p>",
    ]
    render = {
        "warnings": lambda notes: (
            '<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>" for w in notes) + "</ul>"
        ),
        "heading": lambda h: f"<h{h[0]}>{escape(h[1])}</h{h[0]}>",
        "settings": _settings,
        "failures": _failures,
        "cancelled": lambda lines: _cancelled(lines, data),
        "figure": lambda f: _figure(*f),
        "results": _results,
        "provenance": lambda runs: _section_prov(data, runs),
        "beyond": lambda b: _beyond(b[0], b[1], data),
    }
    parts.extend(render[item.kind](item.value) for item in items)
    parts.append("</body></html>")
    return "\n".join(parts)
