"""build_report on hand-filled SQLite sweeps: files, figures, partial sweeps, errors, wording."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from report import NoSweepError, ReportError, UnknownSweepError, build_report
from report.data import load_report_data
from report.figures import accuracy_figure
from storage.folder_store import FolderStore
from tests.unit.report.sweeps import T0, MakeSweep, complete_sweep

FIGURES = [
    "fig1_accuracy",
    "fig2_loss",
    "fig3_random_input",
    "fig4_random_layers",
    "fig5_sine_input",
    "fig6_sine_layers",
    "fig7_photo_input",
    "fig8_photo_layers",
]


def _variance(path: Path) -> float:
    with Image.open(path) as img:
        return float(np.asarray(img.convert("L"), dtype=np.float32).var())


def test_complete_sweep_writes_every_figure_as_png_and_pdf(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep())
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
    out = artifacts_root / "sweeps" / "s-test000001" / "report"
    assert result.out_dir == out and result.sweep_id == "s-test000001"
    for stem in FIGURES:
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png in result.figures and pdf in result.figures
        assert pdf.read_bytes().startswith(b"%PDF")
        assert _variance(png) > 10.0, f"{stem}.png looks blank"
    assert result.html.is_file() and result.markdown.is_file()
    assert set(result.paths) == {*result.figures, result.html, result.markdown}
    assert result.warnings == ()
    assert result.seconds > 0


def test_fig1_has_train_and_validation_line_per_regime_and_phase_marker(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep())
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    spec = accuracy_figure(data)
    ax = spec.figure.axes[0]
    labels = [str(line.get_label()) for line in ax.get_lines()]
    assert sorted(labels[:6]) == sorted(f"{r} {t}" for r in ("Rand.", "Imag.", "FT") for t in ("E", "V"))
    assert labels[6].startswith("FT: head → tune")
    assert labels[7:] == ["_nolegend_"] * 3 + ["seed reports", "chance (10 %)"]  # profile paper, 60 epochs
    assert np.asarray(ax.get_lines()[6].get_xdata(), dtype=float)[0] == pytest.approx(20.5)
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles["Rand. E"] == "--" and styles["Rand. V"] == "-"
    assert not ax.collections, "one seed: no min-max band"
    assert "mean" not in spec.caption


def test_several_seeds_draw_mean_and_min_max_band(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep(), seeds=3, epochs=12)
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    spec = accuracy_figure(data)
    ax = spec.figure.axes[0]
    assert len(ax.collections) == 6  # a band for E and V of each regime
    curves = [line for line in ax.get_lines() if not str(line.get_label()).startswith(("FT:", "chance"))]
    assert len(curves) == 6
    assert "mean over up to 3 seeds" in spec.caption and "min to max" in spec.caption
    # The mean line lies within its band.
    rand_v = next(line for line in ax.get_lines() if line.get_label() == "Rand. V")
    band = np.asarray(ax.collections[1].get_paths()[0].vertices, dtype=float)[:, 1]
    mean = np.asarray(rand_v.get_ydata(), dtype=float)
    assert band.min() <= mean.min() and mean.max() <= band.max()


def test_partial_sweep_shows_running_curves_errors_and_placeholders(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    b.train("scratch", 0)
    b.train("imagenet", 0, done=7, status="running")
    failed = b.train("finetune", 0, done=3, status="failed", error="ResourceExhaustedError: OOM on GPU 0")
    b.visualize("random")
    sine = b.visualize("sine", status="running")
    photo = b.visualize("photo", status="failed", error="FileNotFoundError: photos/dog.jpg")
    b.session.commit()
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
    html = result.html.read_text()
    md = result.markdown.read_text()
    for text in (html, md):
        # Each error once, in Failures, with the runs it ended; figures point there.
        assert text.count("ResourceExhaustedError: OOM on GPU 0") == 1
        assert text.count("FileNotFoundError: photos/dog.jpg") == 1
        assert f"{failed.id} (train finetune)" in text
        assert f"run {photo.id} failed (error 2 under Failures)" in text
        assert f"run {sine.id} is running" in text
        assert "7/60" in text  # the running run's epochs so far
        assert "so far" in text
    # Placeholders are PNGs too, and the report warns about them.
    out = result.out_dir
    assert {p.name for p in result.figures} >= {f"{s}.png" for s in FIGURES}
    assert any("fig6_sine_layers" in w for w in result.warnings)
    assert any("fig8_photo_layers" in w for w in result.warnings)
    assert _variance(out / "fig8_photo_layers.png") > 1.0
    assert f"{photo.id} [failed]" in html
    # The running ImageNet run still has its curve so far in Fig. 1.
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    labels = [line.get_label() for line in accuracy_figure(data).figure.axes[0].get_lines()]
    assert "Imag. V (running)" in labels and "FT V (failed)" in labels


def test_placeholder_names_failed_visualization_error(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    from report.figures import layers_figure

    b = make_sweep()
    photo = b.visualize("photo", status="failed", error="FileNotFoundError: photos/dog.jpg")
    b.session.commit()
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    spec = layers_figure(data, 8, "photo")
    assert spec.placeholder
    text = " ".join(t.get_text() for t in spec.figure.texts).replace("\n", " ")
    assert f"run {photo.id} failed (error 1 under Failures)" in text
    empty = layers_figure(data, 6, "sine")
    assert "no run for the sine image" in " ".join(t.get_text() for t in empty.figure.texts).replace(
        "\n", " "
    )


def test_unknown_sweep_id_and_empty_database_raise_clear_errors(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    with db() as session, pytest.raises(NoSweepError, match="no sweep"):
        build_report(session, FolderStore(artifacts_root))
    complete_sweep(make_sweep())
    with db() as session, pytest.raises(UnknownSweepError, match="s-nope") as info:
        build_report(session, FolderStore(artifacts_root), sweep_id="s-nope")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ReportError)


def test_default_is_latest_sweep_and_out_dir_can_be_chosen(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path, tmp_path: Path
) -> None:
    complete_sweep(make_sweep("s-old", created_at=T0))
    make_sweep("s-new", created_at=T0 + timedelta(days=1)).session.commit()
    with db() as session:
        assert build_report(session, FolderStore(artifacts_root), out_dir=tmp_path / "o1").sweep_id == "s-new"
        old = build_report(session, FolderStore(artifacts_root), sweep_id="s-old", out_dir=tmp_path / "o2")
    assert old.sweep_id == "s-old" and old.html == tmp_path / "o2" / "report.html"


def test_reused_run_reads_the_original_runs_metrics(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    first = make_sweep("s-first", created_at=T0)
    original = first.train("scratch", 0, epochs=10, final=0.5)
    first.session.commit()
    second = make_sweep("s-second", created_at=T0 + timedelta(days=1))
    reuser = second.train("scratch", 0, epochs=10, reuse=original)
    second.session.commit()
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root), "s-second")
        result = build_report(session, FolderStore(artifacts_root), "s-second")
    (run,) = data.train["scratch"]
    assert run.run.id == reuser.id and run.run.source_id == original.id
    assert len(run.epochs) == 10 and run.final_val_accuracy == pytest.approx(0.5, abs=0.03)
    assert f"{reuser.id} [succeeded] (reuses {original.id})" in result.html.read_text()


def test_html_is_self_contained(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep())
    with db() as session:
        html = build_report(session, FolderStore(artifacts_root)).html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html and "url(" not in html
    imgs = re.findall(r"<img\b[^>]*>", html)
    assert len(imgs) == 8
    assert all(re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', tag) for tag in imgs)
    assert "@media print" in html


def test_markdown_references_figures_by_relative_name(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep())
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
    md = result.markdown.read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert refs == [f"{s}.png" for s in FIGURES]
    assert all((result.out_dir / r).is_file() for r in refs)


def test_one_provenance_block_per_section(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep(overrides={"epochs": "60"})
    b.train("scratch", 0, epochs=5, spec_extra={"keras_version": "3.6.0", "keras_backend": "tensorflow"})
    b.train("imagenet", 0, epochs=5)
    b.visualize("random")
    b.session.commit()
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
    html, md = result.html.read_text(), result.markdown.read_text()
    assert html.count('class="prov"') == 2  # Exercise 3 (figures + results), Exercise 4
    assert md.count("> **runs:**") == 2
    prov = html.split('class="prov"')[1]
    assert "3.6.0" in prov and "tensorflow" in prov
    assert "not recorded" in html.split('class="prov"')[2]  # visualizations record no Keras version
    # What is the same for the whole sweep is said once, at the top (and the code in the settings).
    assert "profile paper (overrides: epochs=60), code git:abc1234" in html
    blocks = re.findall(r'<div class="prov">(.*?)</div>', html)
    assert len(blocks) == 2 and not any("profile" in p or "abc1234" in p for p in blocks)


def test_importing_the_package_loads_neither_matplotlib_nor_keras() -> None:
    import subprocess
    import sys

    code = (
        "import sys, report as r; "
        "print(sorted(m for m in ('matplotlib', 'tensorflow', 'keras', 'celery') if m in sys.modules)); "
        "r.build_report; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'celery') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "[]"]
