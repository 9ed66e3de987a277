from __future__ import annotations

from rich.console import Console
from rich.progress_bar import ProgressBar

from orchestrator.monitor import RunRow, all_finished, render_table


def _row(
    run_id: str, kind: str, status: str, epoch: int = 0, epochs: int = 0, error: str | None = None
) -> RunRow:
    return RunRow(
        id=run_id,
        kind=kind,
        label="x",
        status=status,
        epoch=epoch,
        epochs=epochs,
        val_accuracy=0.25 if epochs else None,
        eta_seconds=90.0 if status == "running" else None,
        worker="w1",
        device="CPU",
        attempts=1,
        error=error,
        reused_run_id=None,
    )


def test_table_shows_progress_epochs_eta_and_errors() -> None:
    rows = [
        _row("r-train", "train", "running", epoch=2, epochs=4),
        _row("r-vis", "visualize", "succeeded"),
        _row("r-bad", "visualize", "failed", error="LayerError: conv_pw_99 unknown\ntraceback..."),
    ]
    table = render_table("s-1", rows)
    bars = [cell for column in table.columns for cell in column._cells if isinstance(cell, ProgressBar)]
    assert [(b.completed, b.total) for b in bars] == [(2, 4), (1, 1), (0, 1)]
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "2/4" in text and "25.0%" in text and "1m30s" in text
    assert "r-bad: LayerError: conv_pw_99 unknown" in text and "traceback" not in text


def test_all_finished_counts_cached_runs_as_finished() -> None:
    assert all_finished([_row("a", "train", "cached", 1, 1), _row("b", "report", "failed")])
    assert not all_finished([_row("a", "train", "running", 1, 2)])
