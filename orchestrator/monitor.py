"""Status of runs: rows for a table, JSON records, and a live view that redraws until a sweep ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from storage import repository as repo
from storage.db import Database
from storage.models import TERMINAL_STATUSES, RunStatus

STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "cached": "green",
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
        return record


def _row(summary: Any, source: Any) -> RunRow:
    """``source`` is the run whose results count: the run itself, or the earlier run it reuses."""
    status = "cached" if summary.reused_run_id else str(summary.status)
    epochs = summary.total_epochs
    epoch = source.last_epoch
    eta = None
    if status == "running" and source.seconds_per_epoch and epochs:
        eta = source.seconds_per_epoch * max(0, epochs - epoch)
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
    )


def sweep_rows(db: Database, sweep_id: str) -> list[RunRow]:
    with db.session(readonly=True) as s:
        summaries = repo.sweep_runs(s, sweep_id)
        by_id = {x.id: x for x in summaries}
        rows = []
        for summary in summaries:
            source = summary
            if summary.reused_run_id:
                source = by_id.get(summary.reused_run_id) or repo.run_summary(s, summary.reused_run_id)
            rows.append(_row(summary, source))
        return rows


def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    with db.session(readonly=True) as s:
        summary = repo.run_summary(s, run_id)
        source = repo.run_summary(s, summary.reused_run_id) if summary.reused_run_id else summary
        record = _row(summary, source).to_json()
        record["sweep_id"] = summary.sweep_id
        record["spec"] = summary.spec
        record["seed"] = summary.seed
        record["traceback"] = summary.traceback
        record["history"] = [
            {
                "epoch": m.epoch,
                "phase": m.phase,
                "loss": m.loss,
                "accuracy": m.accuracy,
                "val_loss": m.val_loss,
                "val_accuracy": m.val_accuracy,
                "lr": m.lr,
                "seconds": m.seconds,
                "images_per_second": m.images_per_second,
            }
            for m in repo.metric_history(s, source.id)
        ]
        # Paths relative to $CONVLAB_HOME/artifacts; the files whose results the run stands on.
        record["artifacts"] = [
            {"path": a.path, "sha256": a.sha256, "bytes": a.bytes} for a in repo.artifacts_of(s, source.id)
        ]
        return record


def all_finished(rows: list[RunRow]) -> bool:
    return all(r.status == "cached" or RunStatus(r.status) in TERMINAL_STATUSES for r in rows)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def render_table(sweep_id: str, rows: list[RunRow]) -> Table:
    table = Table(title=f"sweep {sweep_id}", title_justify="left", expand=False)
    for column in (
        "run",
        "kind",
        "what",
        "status",
        "progress",
        "epoch",
        "val acc",
        "ETA",
        "worker",
        "device",
        "tries",
    ):
        table.add_column(column, no_wrap=column != "device")
    for r in rows:
        # Trainings progress by epoch; a visualization or report is one step, done or not.
        total = r.epochs or 1
        completed = min(r.epoch, total) if r.epochs else int(r.status in ("succeeded", "cached"))
        bar = ProgressBar(
            total=total,
            completed=completed,
            width=16,
        )
        table.add_row(
            r.id,
            r.kind,
            r.label,
            f"[{STATUS_STYLE.get(r.status, '')}]{r.status}[/]",
            bar,
            f"{r.epoch}/{r.epochs}" if r.epochs else "",
            f"{r.val_accuracy:.1%}" if r.val_accuracy is not None else "",
            _duration(r.eta_seconds),
            r.worker or "",
            r.device or "",
            str(r.attempts),
        )
    for r in rows:
        if r.status == "failed" and r.error:
            table.caption = (table.caption or "") + f"\n{r.id}: {r.error.splitlines()[0][:160]}"
    return table


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
    with Live(render_table(sweep_id, rows), console=console, refresh_per_second=4) as live:
        while not until(rows) and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            rows = sweep_rows(db, sweep_id)
            live.update(render_table(sweep_id, rows))
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
