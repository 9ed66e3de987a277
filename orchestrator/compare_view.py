"""The text of ``orchestrator compare``: plain columns laid out to a width (80 in a pipe), never wrapped.

A row's first cell (a setting or a training label) is never cut. When the sweeps' columns do not fit
beside it, they are split into blocks of columns, each block repeating the first column, as ``ls`` and
``column`` do, so every line stays within the width.
"""

from __future__ import annotations

from contract.wording import counted
from orchestrator.compare import Accuracy, Comparison

GAP = 2
UNFINISHED = "*"


def _cell(acc: Accuracy | None) -> str:
    if acc is None:
        return "–"
    final = f"{100 * acc.final:.1f}" if acc.final is not None else "–"
    best = f"{100 * acc.best:.1f}" if acc.best is not None else "–"
    seeds = f" ({acc.runs})" if acc.runs > 1 else ""
    return f"{final} / {best}{seeds}{'' if acc.finished else UNFINISHED}"


def _blocks(first: list[str], columns: list[list[str]], width: int) -> list[str]:
    """``first`` (the row names, header included) beside each of ``columns`` (header included)."""
    left = max(len(c) for c in first)
    widths = [max(len(c) for c in col) for col in columns]
    lines: list[str] = []
    start = 0
    while start < len(columns):
        used, end = left, start
        while end < len(columns) and (end == start or used + GAP + widths[end] <= width):
            used += GAP + widths[end]
            end += 1
        if lines:
            lines.append("")
        for row, name in enumerate(first):
            cells = [columns[c][row].ljust(widths[c]) for c in range(start, end)]
            lines.append((" " * GAP).join([name.ljust(left), *cells]).rstrip())
        start = end
    return lines


def _when(c: Comparison, i: int) -> str:
    created = c.sweeps[i].created_at
    return created.strftime("%Y-%m-%d %H:%M") if created else "?"


def render(c: Comparison, width: int = 80) -> str:
    ids = [s.id for s in c.sweeps]
    lines = [
        f"{s.id}  {s.plan} plan, profile {s.profile}, {_when(c, i)}, {counted(len(s.trainings), 'training')}"
        for i, s in enumerate(c.sweeps)
    ]
    lines.append("")
    if c.differing:
        lines.append(f"settings that differ ({c.same} others are the same):")
        names = ["setting", *(key for key, _ in c.differing)]
        columns = [[sweep_id, *(values[i] for _, values in c.differing)] for i, sweep_id in enumerate(ids)]
        lines += _blocks(names, columns, width)
    else:
        lines.append(f"settings: the same in every sweep ({c.same} compared)")
    lines.append("")
    if not c.labels:
        lines.append("no trainings in these sweeps")
        return "\n".join(lines)
    lines.append("validation accuracy, final / best (%):")
    names = ["training", *c.labels]
    columns = [
        [sweep_id, *(_cell(c.accuracy.get((label, sweep_id))) for label in c.labels)] for sweep_id in ids
    ]
    lines += _blocks(names, columns, width)
    notes = []
    if any(not a.finished for a in c.accuracy.values()):
        notes.append(f"{UNFINISHED} unfinished: the values so far of runs that have not succeeded")
    if any(a.runs > 1 for a in c.accuracy.values()):
        notes.append("(n): mean over n runs (seeds)")
    if any((label, sweep_id) not in c.accuracy for label in c.labels for sweep_id in ids):
        notes.append("–: no such training in that sweep")
    return "\n".join([*lines, *notes])
