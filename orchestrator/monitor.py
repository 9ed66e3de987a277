"""Status of runs drawn: the table fitted to a terminal's width, and a live view that redraws until a
sweep ends (one line per change where the output is not a terminal). The rows come from
:mod:`orchestrator.rows`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from orchestrator.rows import CACHED, RunRow, all_finished, sweep_rows, sweep_setup
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.models import RunKind, RunStatus

STATUS_STYLE = {
    RunStatus.QUEUED: "dim",
    RunStatus.RUNNING: "cyan",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "yellow",
    CACHED: "green",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


# ---------------------------------------------------------------------------------------- the table
#
# Laid out to the width it is given: every column when there is room; else columns are merged, narrowed
# or dropped by priority (least useful first) until the table fits. The run id is never cut: every
# other command needs it. What a dropped column said for the whole sweep moves to the header line.

SHORT_KIND = {"train": "train", "visualize": "vis", "report": "report"}


def progress_bar(completed: float, total: int, width: int, *, ascii_only: bool = False) -> Text:
    """Done and to-do drawn with different characters, not only colours: a finished bar and an empty
    one look different in a 16-colour terminal, without colour, and in a log file."""
    filled = 0 if total <= 0 else round(width * min(completed, total) / total)
    done, todo = ("#", "-") if ascii_only else ("\u2588", "\u2591")  # full block, light shade
    style = "green" if total > 0 and completed >= total else "cyan"
    return Text.assemble((done * filled, style), (todo * (width - filled), "grey50"))


@dataclass(frozen=True)
class _Layout:
    columns: tuple[str, ...]
    bar_width: int = 16
    merged_kind: bool = False  # one "what" column: "vis sine" instead of "visualize" + "sine"
    label_width: int | None = None  # labels longer than this are cut in the middle


def cut_middle(text: str, width: int) -> str:
    """``finetune+bn-frozen+upscaled+augment`` -> ``finetune+bn-f…ed+augment``: both ends kept (the
    explain plan's labels differ at either end), never dropped."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "\u2026"[:width]
    head = width // 2
    return text[:head] + "\u2026" + text[len(text) - (width - 1 - head) :]


_FULL = ("run", "kind", "what", "status", "progress", "epoch", "val acc", "ETA", "worker", "device", "tries")
_LAYOUTS = (
    _Layout(_FULL),
    _Layout(tuple(c for c in _FULL if c != "device")),
    _Layout(tuple(c for c in _FULL if c not in ("device", "worker"))),
    _Layout(("run", "kind", "what", "status", "progress", "epoch", "val acc", "ETA")),
    _Layout(("run", "what", "status", "progress", "epoch", "val acc", "ETA"), merged_kind=True),
    _Layout(("run", "what", "status", "progress", "epoch", "val acc", "ETA"), 10, merged_kind=True),
    _Layout(("run", "what", "status", "epoch", "val acc", "ETA"), merged_kind=True),
    _Layout(("run", "what", "status", "epoch", "val acc"), merged_kind=True),
)
# When even the narrowest layout above is too wide, labels are cut (down to this many characters)
# before a column goes: the label is what tells one run from the next.
_CUT_LAYOUTS = (
    _Layout(("run", "what", "status", "epoch", "val acc"), merged_kind=True),
    _Layout(("run", "what", "status", "epoch"), merged_kind=True),
    _Layout(("run", "what", "status"), merged_kind=True),
)
_MIN_LABEL = 16
_RIGHT = {"epoch", "val acc", "ETA", "tries"}


def _cells(r: RunRow, layout: _Layout, ascii_only: bool) -> dict[str, Any]:
    # Trainings progress by epoch; a visualization or report is one step, done or not.
    total = r.epochs or 1
    completed = (
        min(r.epoch + (r.epoch_fraction or 0.0), total)
        if r.epochs
        else int(r.status in (RunStatus.SUCCEEDED, CACHED))
    )
    epoch_text = f"{r.epoch}/{r.epochs}" if r.epochs else ""
    if r.epoch_fraction is not None:  # inside an epoch: how far, and how fast
        epoch_text += f" +{r.epoch_fraction:.0%}"
    label = r.label if layout.label_width is None else cut_middle(r.label, layout.label_width)
    short_kind = SHORT_KIND.get(r.kind, r.kind)
    return {
        "run": r.id,
        "kind": r.kind,
        "what": (f"{short_kind} {label}".strip() if r.label != r.kind else short_kind)
        if layout.merged_kind
        else label,
        "status": Text(r.status, style=STATUS_STYLE.get(r.status, "")),
        "progress": progress_bar(completed, total, layout.bar_width, ascii_only=ascii_only),
        "epoch": epoch_text,
        "val acc": f"{r.val_accuracy:.1%}" if r.val_accuracy is not None else "",
        "ETA": _duration(r.eta_seconds),
        "worker": r.worker or "",
        "device": r.device or "",
        "tries": str(r.starts),
    }


def _table(rows: list[RunRow], layout: _Layout, ascii_only: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, expand=False)
    id_width = max([len(r.id) for r in rows] + [3])
    for column in layout.columns:
        table.add_column(
            column,
            no_wrap=True,
            justify="right" if column in _RIGHT else "left",
            min_width=id_width if column == "run" else None,
        )
    for r in rows:
        cells = _cells(r, layout, ascii_only)
        table.add_row(*(cells[c] for c in layout.columns))
    return table


def _natural_width(table: Table) -> int:
    console = Console(width=10_000, color_system=None, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum


def _joined(parts: list[str], width: int | None) -> str:
    """``a · b · c``, broken between parts (never inside one: an id, a device name) where a line would
    pass ``width``."""
    lines: list[str] = []
    for part in parts:
        if lines and (width is None or len(lines[-1]) + 3 + len(part) <= width):
            lines[-1] += " \u00b7 " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _header(
    sweep_id: str, rows: list[RunRow], profile: str | None, shown: tuple[str, ...], width: int | None = None
) -> Text:
    """``sweep S · profile P · 1 running, 2 queued``, and on a second line what a dropped column would
    have repeated on every row (the one worker and device at work), so narrowing loses no fact."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = (
        RunStatus.RUNNING,
        RunStatus.QUEUED,
        RunStatus.SUCCEEDED,
        CACHED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    )
    parts = [f"sweep {sweep_id}"] + ([f"profile {profile}"] if profile else [])
    parts.append(", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "no runs")
    active = [r for r in rows if r.status == RunStatus.RUNNING] or [r for r in rows if r.worker]
    workers = sorted({r.worker for r in active if r.worker})
    # A report needs no accelerator and records plain "CPU": it would make one worker look like two
    # devices. Its device counts only when nothing else ran.
    computing = [r for r in active if r.kind != RunKind.REPORT] or active
    devices = sorted({r.device for r in computing if r.device})
    facts = []
    if "worker" not in shown and workers:
        facts.append(f"worker {workers[0]}" if len(workers) == 1 else f"{len(workers)} workers")
    if "device" not in shown and devices:
        facts.append(" and ".join(devices) if len(devices) <= 2 else f"{len(devices)} devices")
    text = Text(_joined(parts, width), style="bold")
    if facts:
        text.append("\n" + _joined(["on " + facts[0], *facts[1:]], width), style="dim")
    return text


def _fit(rows: list[RunRow], width: int | None, ascii_only: bool) -> tuple[_Layout, Table]:
    """The widest layout that fits ``width`` with whole labels; else the first that fits with labels cut
    to no fewer than ``_MIN_LABEL`` characters; else the narrowest, labels cut to what is left."""
    if width is None:
        return _LAYOUTS[0], _table(rows, _LAYOUTS[0], ascii_only)
    for layout in _LAYOUTS:
        table = _table(rows, layout, ascii_only)
        if _natural_width(table) <= width:
            return layout, table
    longest = max([len(r.label) for r in rows] + [0])

    def cut(layout: _Layout, at_least: int) -> tuple[_Layout, Table]:
        over = _natural_width(_table(rows, layout, ascii_only)) - width
        narrower = replace(layout, label_width=max(longest - over, at_least))
        return narrower, _table(rows, narrower, ascii_only)

    for layout in _CUT_LAYOUTS[:-1]:
        narrower, table = cut(layout, _MIN_LABEL)
        if _natural_width(table) <= width:
            return narrower, table
    return cut(_CUT_LAYOUTS[-1], 1)


def render_table(
    sweep_id: str,
    rows: list[RunRow],
    *,
    width: int | None = None,
    profile: str | None = None,
    ascii_only: bool = False,
) -> Group:
    """Header line, table and the first line of each failure, fitted to ``width`` columns.

    ``width=None``: no limit (a pipe or a log): every column, and error lines never cut or wrapped.
    """
    layout, table = _fit(rows, width, ascii_only)
    parts: list[Any] = [_header(sweep_id, rows, profile, layout.columns, width), table]
    for r in rows:
        if r.status == RunStatus.FAILED and r.error:
            line = Text(f"{r.id}: {r.error.splitlines()[0]}", style="red")
            if width is not None:
                line.truncate(width, overflow="ellipsis")
            parts.append(line)
    return Group(*parts)


def make_console(*, stderr: bool = False) -> Console:
    """A console whose output can be copied and grepped: when it is not a terminal (a pipe, a log) and
    ``COLUMNS`` does not say otherwise, nothing is wrapped at 80 columns (paths, errors, ids stay whole)."""
    from orchestrator.host import columns_given

    console = Console(stderr=stderr)
    if not console.is_terminal and not columns_given():
        console.width = UNLIMITED
        console.soft_wrap = True  # print() inserts no line breaks either
    return console


def run_lines(detail: dict[str, Any], store: ArtifactStore) -> list[str]:
    """``status RUN`` for a person: what the run is and how far it got, what it ran with (its stored
    spec), the run whose results it shows when cached, its files (where they are: paths or URLs) and the
    trained model, then its epochs."""

    def field(name: str, value: Any) -> str:
        return f"{name:>13}: {round(value, 4) if isinstance(value, float) else value}"

    lines = [field(k, detail.get(k)) for k in ("id", "kind", "label", "sweep_id", "status")]
    if detail.get("reused_run_id"):
        lines.append(field("reuses", f"{detail['reused_run_id']} (an identical earlier run: its results)"))
    lines += [field(k, detail.get(k)) for k in ("epoch", "epochs", "val_accuracy")]
    lines.append(
        field("tries", f"started {detail['starts']}, {detail['attempts']} counted against the limit")
    )
    lines += [field(k, detail.get(k)) for k in ("worker", "device", "error")]
    if detail.get("epoch_fraction") is not None:  # inside an epoch: how far, how fast
        fraction, rate = detail["epoch_fraction"], detail["live_images_per_second"]
        lines.append(
            field("in epoch", f"{detail['epoch'] + 1}, {fraction:.0%} of its batches, {rate:.0f} images/s")
        )
    spec = dict(detail.get("spec") or {})
    spec.setdefault("seed", detail.get("seed"))
    lines.append(field("settings", "what it ran with (its stored spec):"))
    lines += [f"{'':>15}{key}={value}" for key, value in sorted(spec.items())]
    if detail.get("model"):
        lines.append(field("model", store.describe(detail["model"])))
    artifacts = detail.get("artifacts") or []
    lines.append(
        field(
            "artifacts",
            f"{len(artifacts)} file(s)"
            + (" under the run it reuses" if detail.get("reused_run_id") and artifacts else ""),
        )
    )
    lines += [f"{'':>15}{store.describe(a['path'])} ({a['bytes']:,} bytes)" for a in artifacts]
    for h in detail["history"]:
        val = h["val_accuracy"] if h["val_accuracy"] is not None else float("nan")
        loss = f"loss {h['loss']:.4f} acc {h['accuracy']:.4f} val_acc {val:.4f}"
        lines.append(f"  epoch {h['epoch']:>3} {h['phase']:5} {loss}")
    return lines


def say(console: Console, line: str) -> None:
    """One line as it is: never wrapped by rich (a path cut by a line break cannot be pasted), no markup
    (a ``[`` in a path or an error is text), no highlighting."""
    console.print(Text(line), soft_wrap=True)


UNLIMITED = 100_000  # "as wide as the content": tables are not expanded, so they keep their natural width


def table_width(console: Console) -> int | None:
    """The width to lay the status table out to; None when the console has no real width."""
    return None if console.width >= UNLIMITED else console.width


def profile_text(profile: str | None, overrides: dict[str, str]) -> str | None:
    """``paper``, or ``paper + epochs=8, lr=1e-3`` for a sweep with overrides: a sweep with overrides
    is not the profile's plan, and its results are not the profile's."""
    if not overrides:
        return profile
    given = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{profile} + {given}" if len(overrides) <= 3 else f"{profile} + {len(overrides)} overrides"


def describe_sweep(db: Database, sweep_id: str) -> str | None:
    """What the header says the sweep is (see :func:`profile_text`)."""
    return profile_text(*sweep_setup(db, sweep_id))


def render_sweep(console: Console, sweep_id: str, rows: list[RunRow], profile: str | None) -> Group:
    return render_table(
        sweep_id, rows, width=table_width(console), profile=profile, ascii_only=console.options.ascii_only
    )


def watch(
    db: Database,
    sweep_id: str,
    console: Console,
    *,
    interval: float = 1.0,
    until: Callable[[list[RunRow]], bool] = all_finished,
    timeout: float | None = None,
) -> list[RunRow]:
    """Redraw the sweep's table until ``until(rows)`` holds (by default: every run has ended)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rows = sweep_rows(db, sweep_id)
    if not console.is_terminal:
        return _watch_plain(db, sweep_id, console, interval, until, deadline, rows)
    profile = describe_sweep(db, sweep_id)
    # Laid out again at every redraw, so a resized terminal gets a table that fits.
    with Live(render_sweep(console, sweep_id, rows, profile), console=console, refresh_per_second=4) as live:
        while not until(rows) and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            rows = sweep_rows(db, sweep_id)
            live.update(render_sweep(console, sweep_id, rows, profile))
    return rows


def _watch_plain(
    db: Database,
    sweep_id: str,
    console: Console,
    interval: float,
    until: Callable[[list[RunRow]], bool],
    deadline: float | None,
    rows: list[RunRow],
) -> list[RunRow]:
    """Not a terminal (a log, CI): one line per change instead of a redrawn table."""
    seen: dict[str, tuple[str, int]] = {}
    while True:
        for r in rows:
            state = (r.status, r.epoch)
            if seen.get(r.id) != state:
                seen[r.id] = state
                acc = f" val_acc={r.val_accuracy:.3f}" if r.val_accuracy is not None else ""
                epoch = f" epoch {r.epoch}/{r.epochs}" if r.epochs else ""
                stamp = datetime.now(UTC).strftime("%H:%M:%S")
                say(console, f"{stamp} {r.id} {r.kind:9} {r.label:9} {r.status}{epoch}{acc}")
        if until(rows) or (deadline is not None and time.monotonic() >= deadline):
            return rows
        time.sleep(interval)
        rows = sweep_rows(db, sweep_id)
