"""A partial sweep's report says what it is: cancelled runs apart from failed ones, no conclusion judged on a
run that did not finish, and wall time that counts only time spent running."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from report import build_report
from report.data import load_report_data
from report.figures import accuracy_figure, loss_figure
from report.tables import results_table
from storage.folder_store import FolderStore
from storage.models import RunStatus
from tests.unit.report.sweeps import T0, MakeSweep


def _partial_sweep(make_sweep: MakeSweep):  # noqa: ANN202 - test helper
    """The seed's plan at 8 epochs, ImageNet init cancelled after epoch 2 and what needs it with it."""
    b = make_sweep()
    b.train("scratch", 0, epochs=8)
    imagenet = b.train(
        "imagenet", 0, epochs=8, done=2, status="cancelled", final=0.5, error="cancelled by request"
    )
    b.train("finetune", 0, epochs=8)
    random = b.visualize("random", status="cancelled", error="cancelled while queued", model=imagenet)
    random.started_at = None
    b.session.commit()
    return b, imagenet, random


def test_a_cancelled_run_is_listed_as_cancelled_and_no_conclusion_is_judged_on_it(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    _, imagenet, random = _partial_sweep(make_sweep)
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
        data = load_report_data(session, FolderStore(artifacts_root))
        table = results_table(data)
    # The report keeps the enum's members, not strings.
    assert {t.run.status for t in data.trainings} == {RunStatus.SUCCEEDED, RunStatus.CANCELLED}
    assert all(isinstance(t.run.status, RunStatus) for t in data.trainings)
    for conclusion in table.conclusions:
        assert conclusion.holds is None and conclusion.verdict == "not judged", conclusion
        assert (
            f"ImageNet init is unfinished ({imagenet.id} cancelled after epoch 2 of 8)" in conclusion.detail
        )
    html, md = result.html.read_text(), result.markdown.read_text()
    for text in (html, md):
        assert "Failures" not in text.replace("see Failures", "")  # nothing failed: no such section
        assert "Error 1" not in text
        assert f"{imagenet.id} (train imagenet) cancelled after epoch 2 of 8 (cancelled by request)" in text
        assert f"{random.id} (visualize random) cancelled before it started (cancelled while queued)" in text
        assert "orchestrator retry s-test000001" in text
        assert "not judged</span> — ImageNet init is unfinished" in text or (
            "**not judged** — ImageNet init is unfinished" in text
        )
        assert "(indicative)" not in text  # nothing was judged, so nothing is indicative
        # Fig. 4 is a placeholder pointing to the Cancelled section, not to an error.
        assert f"run {random.id} was cancelled before it started (under Cancelled)" in text
    assert "<h2>Cancelled</h2>" in html and "## Cancelled" in md


def test_failed_and_cancelled_runs_are_said_apart(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    b.train("scratch", 0, epochs=8)
    failed = b.train("imagenet", 0, epochs=8, done=3, status="failed", error="ResourceExhaustedError: OOM")
    cancelled = b.train("finetune", 0, epochs=8, done=1, status="cancelled", error="cancelled by request")
    b.session.commit()
    with db() as session:
        md = build_report(session, FolderStore(artifacts_root)).markdown.read_text()
    failures = md.split("## Failures", 1)[1].split("## ", 1)[0]
    cancelled_part = md.split("## Cancelled", 1)[1].split("## ", 1)[0]
    assert failed.id in failures and cancelled.id not in failures
    assert cancelled.id in cancelled_part and failed.id not in cancelled_part
    assert "1 run failed: `ResourceExhaustedError: OOM`" in failures


def test_conclusions_stand_on_the_finished_seeds_and_say_which_were_left_out(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    b.train("scratch", 0, epochs=8, final=0.30)
    b.train("imagenet", 0, epochs=8, final=0.70)
    b.train("imagenet", 1, epochs=8, done=2, status="cancelled", final=0.10)  # would sink the mean
    b.session.commit()
    with db() as session:
        beats, _ = results_table(load_report_data(session, FolderStore(artifacts_root))).conclusions
    assert beats.holds is True
    assert "ImageNet 70.0 % vs random 30.0 %" in beats.detail and "1 unfinished run left out" in beats.detail


def test_wall_time_of_a_resumed_run_leaves_out_the_wait_before_retry(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    once = b.train("scratch", 0, epochs=8)  # 8 epochs of 30 s, one attempt: finished - started
    resumed = b.train("imagenet", 0, epochs=8)
    # Cancelled after epoch 2, retried ten hours later: two claims, finished long after started.
    resumed.fence = 2
    resumed.finished_at = T0 + timedelta(hours=10, seconds=6 * 30)
    once.fence = 1
    once.finished_at = T0 + timedelta(seconds=8 * 30 + 15)  # 15 s of start-up before the first epoch
    b.session.commit()
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
        md = build_report(session, FolderStore(artifacts_root)).markdown.read_text()
    by_regime = {t.regime: t for t in data.trainings}
    assert by_regime["imagenet"].seconds == 8 * 30.0  # its epochs' own time, no ten-hour gap
    assert by_regime["scratch"].seconds == 8 * 30.0 + 15
    rows = {r.regime: r for r in results_table(data).rows}
    assert rows["imagenet"].seconds == 240.0
    # No ten-hour duration (H:MM:SS): "10:0" alone also matched the report's "built ... 10:02 UTC" line
    # whenever the test ran between 10:00 and 10:09.
    assert "0:04:00" in md and not re.search(r"(?<!\d)10:\d\d:\d\d", md), md


def test_fig1_marks_chance_and_the_seeds_values_for_paper_only(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    for sweep_id, profile in (("s-paper00001", "paper"), ("s-quick00002", "quick")):
        b = make_sweep(sweep_id=sweep_id, profile=profile)
        for regime in ("scratch", "imagenet", "finetune"):
            b.train(regime, 0, epochs=60)
        b.session.commit()
    with db() as session:
        paper = load_report_data(session, FolderStore(artifacts_root), "s-paper00001")
        quick = load_report_data(session, FolderStore(artifacts_root), "s-quick00002")
    for data, marked in ((paper, True), (quick, False)):
        spec = accuracy_figure(data)
        lines = {str(line.get_label()): line for line in spec.figure.axes[0].get_lines()}
        chance = lines["chance (10 %)"]
        assert set(np.asarray(chance.get_ydata(), dtype=float)) == {10.0}
        assert ("seed reports" in lines) is marked
        stars = [line for line in spec.figure.axes[0].get_lines() if line.get_marker() == "*"]
        points = {
            (float(x), float(y)) for s in stars for x, y in zip(s.get_xdata(), s.get_ydata(), strict=True)
        }
        assert points == ({(60.0, 35.4), (1.0, 38.0), (60.0, 78.0)} if marked else set())
        assert "chance" in spec.caption and ("Stars mark" in spec.caption) is marked


def test_the_legends_of_figs_1_and_2_sit_beside_the_curves(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    for regime in ("scratch", "imagenet", "finetune"):
        b.train(regime, 0, epochs=60)
    b.session.commit()
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    for spec in (accuracy_figure(data), loss_figure(data)):
        fig = spec.figure
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        axes = ax.get_window_extent()
        assert legend.x0 >= axes.x1, spec.stem  # right of the plotting area: no curve under it
        assert legend.x1 <= fig.bbox.x1 + 1, spec.stem  # and not cut off by the figure's edge
