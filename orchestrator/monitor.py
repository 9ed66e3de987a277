"""Status of runs: rows for a table, JSON records, and a live view that redraws until a sweep ends."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from storage import repository as repo
from storage.db import Database
from storage.models import TERMINAL_STATUSES, RunStatus

# What status tables call a run satisfied by an earlier identical run instead of being executed (stored
# as succeeded, with ``reused_run_id``): shown apart, so that a user sees what ran now and what did not.
CACHED = "cached"

STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    CACHED: "green",
}


@dataclass(frozen=True)
class RunRow:
    id: str
    kind: str
    label: str
    status: str  # the stored status, or "cached" for a run satisfied by an earlier identical one
    epoch: int
    epochs: int
    val_accuracy: float | None
    eta_seconds: float | None
    worker: str | None
    device: str | None
    attempts: int
    error: str | None
    reused_run_id: str | None
    # How far into the epoch under way a running training is (0-1), and its images/s so far in it.
    epoch_fraction: float | None = None
    live_images_per_second: float | None = None

    def to_json(self) -> dict[str, Any]:
        record = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "val_accuracy": self.val_accuracy,
            "eta_seconds": self.eta_seconds,
            "attempts": self.attempts,
            "worker": self.worker,
            "device": self.device,
            "error": self.error,
            "reused_run_id": self.reused_run_id,
            "label": self.label,
        }
        if self.kind == "train":
            record["regime"] = self.label
        if self.epoch_fraction is not None:
            record["epoch_fraction"] = round(self.epoch_fraction, 4)
            record["live_images_per_second"] = self.live_images_per_second
        return record


def _row(summary: Any, source: Any) -> RunRow:
    """``source`` is the run whose results count: the run itself, or the earlier run it reuses."""
    status = str(summary.status)
    if summary.reused_run_id:
        # Cached once it is satisfied; until then a joined run shows the status of the run it follows.
        live = summary.status == RunStatus.QUEUED
        status = str(source.status) if live else CACHED if summary.status == RunStatus.SUCCEEDED else status
    epochs = summary.total_epochs
    epoch = source.last_epoch
    fraction, live_rate = _live_progress(source) if status == "running" else (None, None)
    eta = None
    if status == "running" and epochs:
        remaining = max(0.0, epochs - epoch - (fraction or 0.0))
        if source.seconds_per_epoch:
            eta = source.seconds_per_epoch * remaining
        elif fraction and live_rate:  # the first epoch: from the rate so far (training part only)
            progress = source.progress or {}
            epoch_seconds = progress["of"] * (source.spec.get("batch_size") or 32) / live_rate
            eta = epoch_seconds * remaining
    return RunRow(
        id=summary.id,
        kind=str(summary.kind),
        label=summary.label,
        status=status,
        epoch=epoch,
        epochs=epochs,
        val_accuracy=source.val_accuracy,
        eta_seconds=eta,
        worker=source.worker,
        device=source.device,
        attempts=summary.attempts,
        error=summary.error,
        reused_run_id=summary.reused_run_id,
        epoch_fraction=fraction,
        live_images_per_second=live_rate,
    )


def _live_progress(source: Any) -> tuple[float | None, float | None]:
    """(fraction of the epoch under way, images/s in it) from the progress the heartbeat carries; only
    when it is about the epoch after the last recorded one (older progress is stale)."""
    progress = source.progress or {}
    try:
        if int(progress["epoch"]) != source.last_epoch + 1 or int(progress["of"]) <= 0:
            return None, None
        return min(1.0, int(progress["batches"]) / int(progress["of"])), float(progress["images_per_second"])
    except (KeyError, TypeError, ValueError):
        return None, None


def sweep_rows(db: Database, sweep_id: str) -> list[RunRow]:
    with db.session(readonly=True) as s:
        summaries = repo.sweep_runs(s, sweep_id)
        by_id = {x.id: x for x in summaries}
        rows = []
        for summary in summaries:
            source = by_id.get(summary.results_run_id) or repo.run_summary(s, summary.results_run_id)
            rows.append(_row(summary, source))
        return rows


def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    with db.session(readonly=True) as s:
        summary = repo.run_summary(s, run_id)
        source = (
            summary if summary.results_run_id == summary.id else repo.run_summary(s, summary.results_run_id)
        )
        record = _row(summary, source).to_json()
        record["sweep_id"] = summary.sweep_id
        record["spec"] = summary.spec
        record["seed"] = summary.seed
        record["traceback"] = summary.traceback
        record["history"] = [r.to_dict() for r in repo.epoch_history(s, source.id)]
        # Paths relative to $CONVLAB_HOME/artifacts; the files whose results the run stands on.
        record["artifacts"] = [
            {"path": a.path, "sha256": a.sha256, "bytes": a.bytes} for a in repo.artifacts_of(s, source.id)
        ]
        return record


def all_finished(rows: list[RunRow]) -> bool:
    return all(r.status == CACHED or RunStatus(r.status) in TERMINAL_STATUSES for r in rows)


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
    _Layout(("run", "status", "epoch")),
)
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
    return {
        "run": r.id,
        "kind": r.kind,
        "what": f"{SHORT_KIND.get(r.kind, r.kind)} {r.label}".strip()
        if layout.merged_kind and r.label != r.kind
        else (SHORT_KIND.get(r.kind, r.kind) if layout.merged_kind else r.label),
        "status": f"[{STATUS_STYLE.get(r.status, '')}]{r.status}[/]",
        "progress": progress_bar(completed, total, layout.bar_width, ascii_only=ascii_only),
        "epoch": epoch_text,
        "val acc": f"{r.val_accuracy:.1%}" if r.val_accuracy is not None else "",
        "ETA": _duration(r.eta_seconds),
        "worker": r.worker or "",
        "device": r.device or "",
        "tries": str(r.attempts),
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


def _header(sweep_id: str, rows: list[RunRow], profile: str | None, shown: tuple[str, ...]) -> Text:
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
    active = [r for r in rows if r.status == "running"] or [r for r in rows if r.worker]
    workers = sorted({r.worker for r in active if r.worker})
    devices = sorted({r.device for r in active if r.device})
    facts = []
    if "worker" not in shown and workers:
        facts.append(f"worker {workers[0]}" if len(workers) == 1 else f"{len(workers)} workers")
    if "device" not in shown and devices:
        facts.append(devices[0] if len(devices) == 1 else f"{len(devices)} devices")
    text = Text(" \u00b7 ".join(parts), style="bold")
    if facts:
        text.append("\non " + " \u00b7 ".join(facts), style="dim")
    return text


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
    layout = _LAYOUTS[0]
    table = _table(rows, layout, ascii_only)
    if width is not None:
        for layout in _LAYOUTS:
            table = _table(rows, layout, ascii_only)
            if _natural_width(table) <= width:
                break
    parts: list[Any] = [_header(sweep_id, rows, profile, layout.columns), table]
    for r in rows:
        if r.status == "failed" and r.error:
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


UNLIMITED = 100_000  # "as wide as the content": tables are not expanded, so they keep their natural width


def table_width(console: Console) -> int | None:
    """The width to lay the status table out to; None when the console has no real width."""
    return None if console.width >= UNLIMITED else console.width


def sweep_profile(db: Database, sweep_id: str) -> str | None:
    with db.session(readonly=True) as s:
        return repo.get_sweep(s, sweep_id).profile


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
    profile = sweep_profile(db, sweep_id)
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
                console.print(
                    f"{stamp} {r.id} {r.kind:9} {r.label:9} {r.status}{epoch}{acc}", highlight=False
                )
        if until(rows) or (deadline is not None and time.monotonic() >= deadline):
            return rows
        time.sleep(interval)
        rows = sweep_rows(db, sweep_id)
