from __future__ import annotations

import pytest
from rich.console import Console

from orchestrator.monitor import progress_bar, render_table
from orchestrator.rows import RunRow, all_finished

WORKER = "cpu-1a2b3c@a-rather-long-host-name.example.org"
DEVICE = "CPU Intel(R) Xeon(R) Platinum 8488C (tensorflow)"
ERROR = "WeightsError: /a/long/path/weights/mobilenet_1_0_224_tf_no_top.h5 not found in folder /a/long/path"


def _row(
    run_id: str,
    kind: str,
    status: str,
    epoch: int = 0,
    epochs: int = 0,
    error: str | None = None,
    label: str = "x",
) -> RunRow:
    return RunRow(
        id=run_id,
        kind=kind,
        label=label,
        status=status,
        epoch=epoch,
        epochs=epochs,
        val_accuracy=0.25 if epochs else None,
        eta_seconds=90.0 if status == "running" else None,
        worker=WORKER if status in ("running", "succeeded") else None,
        device=DEVICE if status in ("running", "succeeded") else None,
        attempts=1,
        error=error,
        reused_run_id=None,
    )


def _sweep() -> list[RunRow]:
    return [
        _row("r-0d847a1b2c", "train", "succeeded", 60, 60, label="scratch"),
        _row("r-0d847a1b2d", "train", "running", 2, 60, label="imagenet"),
        _row("r-0d847a1b2e", "train", "queued", 0, 60, label="finetune"),
        _row("r-0d847a1b2f", "visualize", "queued", label="photo"),
        _row("r-0d847a1b30", "visualize", "failed", error=ERROR + "\ntraceback...", label="sine"),
        _row("r-0d847a1b31", "report", "queued", label="report"),
    ]


def _text(width: int | None, console_width: int) -> str:
    console = Console(record=True, width=console_width, color_system=None, soft_wrap=width is None)
    console.print(render_table("s-5f3e2d1c0b", _sweep(), width=width, profile="paper"))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_narrow_terminals_get_a_table_that_fits_without_cutting_an_id(width: int) -> None:
    text = _text(width, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for r in _sweep():
        assert any(line.startswith(r.id + " ") for line in lines), (r.id, text)
    assert "…" not in "".join(line for line in lines if line.startswith("r-") and ":" not in line)
    assert "sweep s-5f3e2d1c0b" in lines[0] and "profile paper" in lines[0]
    assert "1 running, 3 queued, 1 succeeded, 1 failed" in lines[0]
    # The worker and device columns no longer fit: the header says which worker and device run.
    assert WORKER in text and DEVICE.split()[0] in text
    assert "2/60" in text and "25.0%" in text and "1m30s" in text


def test_wide_terminals_show_every_column() -> None:
    text = _text(200, 200)
    header = next(line for line in text.splitlines() if line.startswith("run "))
    columns = ("kind", "what", "status", "progress", "epoch", "val acc", "ETA", "worker", "device", "tries")
    for column in columns:
        assert column in header, header
    assert DEVICE in text and WORKER in text
    assert max(len(line) for line in text.splitlines()) <= 200


def test_failures_show_their_first_line_whole_when_unlimited_and_cut_in_a_terminal() -> None:
    unlimited = _text(None, 100_000)
    assert f"r-0d847a1b30: {ERROR}" in unlimited and "traceback" not in unlimited
    narrow = _text(80, 80)
    line = next(line for line in narrow.splitlines() if line.startswith("r-0d847a1b30:"))
    assert len(line) <= 80 and line.endswith("…")


def test_finished_and_empty_bars_differ_without_colour() -> None:
    assert progress_bar(4, 4, 8).plain == "█" * 8
    assert progress_bar(0, 4, 8).plain == "░" * 8
    assert progress_bar(2, 4, 8).plain == "████░░░░"
    assert progress_bar(1, 1, 4, ascii_only=True).plain == "####"
    assert progress_bar(0, 1, 4, ascii_only=True).plain == "----"


def test_all_finished_counts_cached_runs_as_finished() -> None:
    assert all_finished([_row("a", "train", "cached", 1, 1), _row("b", "report", "failed")])
    assert not all_finished([_row("a", "train", "running", 1, 2)])
