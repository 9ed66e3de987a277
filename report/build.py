"""Snapshot the sweep once, then draw figures 1-8 (and 9-10 for the explain plan) and write ``report.html``
and ``report.md``.

``load_report_data`` reads everything in one short read-only transaction; :func:`render_report` draws
from that snapshot with no transaction open, so a slow or suspended report (Ctrl-Z) never holds a lock
that a training needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from report.beyond import beyond_figures, beyond_table
from report.data import ReportData, load_report_data
from report.failures import failures
from report.figures import FigureSpec, all_figures, save
from report.html import render_html
from report.markdown import render_markdown
from report.outline import outline
from report.settings import settings_table
from report.tables import results_table
from storage.artifacts import ArtifactStore, write_atomically


@dataclass(frozen=True)
class ReportResult:
    sweep_id: str
    out_dir: Path
    html: Path
    markdown: Path
    figures: tuple[Path, ...]  # PNG and PDF of each figure, in figure order
    paths: tuple[Path, ...]  # everything written: figures, report.html, report.md
    seconds: float
    warnings: tuple[str, ...]


def default_out_dir(store: ArtifactStore, sweep_id: str) -> Path:
    """Where a report is drawn when no folder is given: the sweep's published report folder (for an
    object store, its local scratch copy, which :func:`publish` uploads)."""
    return store.scratch_folder(store.sweep_report_dir(sweep_id))


def publish(store: ArtifactStore, result: ReportResult) -> str:
    """Store a report drawn in :func:`default_out_dir` at the sweep's report keys (nothing to do where
    the folder is the store); where users open it."""
    target = store.sweep_report_dir(result.sweep_id)
    if not store.is_local:
        for path in result.paths:
            store.write_file(f"{target}/{path.relative_to(result.out_dir).as_posix()}", path, replace=True)
    return store.describe(f"{target}/report.html")


def _write_text(path: Path, text: str) -> None:
    """Atomic: a reader never sees half a report."""
    write_atomically(path, text.encode("utf-8"))


def build_report(
    session: Session,
    store: ArtifactStore,
    sweep_id: str | None = None,
    out_dir: Path | None = None,
) -> ReportResult:
    """Build the report of sweep ``sweep_id`` (default: the latest) from ``session``.

    Raises :class:`~report.data.UnknownSweepError` for an unknown id and
    :class:`~report.data.NoSweepError` when there is no sweep (both are ``ValueError``).
    """
    return render_report(load_report_data(session, store, sweep_id), out_dir)


def render_report(
    data: ReportData, out_dir: Path | None = None, *, before_figure: Callable[[], None] = lambda: None
) -> ReportResult:
    """Draw and write the report of a snapshot. ``before_figure`` is called before each figure and may
    raise to abandon the report (a cancelled report task), before report.html is written."""
    start = time.perf_counter()
    out = out_dir if out_dir is not None else default_out_dir(data.store, data.sweep.id)
    out.mkdir(parents=True, exist_ok=True)
    warnings = list(data.warnings)

    table = results_table(data)
    settings = settings_table(data)
    fails = failures(data)
    beyond = beyond_table(data) if data.variants else None
    written: list[tuple[FigureSpec, Path]] = []
    figure_paths: list[Path] = []
    for spec in [*all_figures(data), *beyond_figures(data)]:
        before_figure()
        png, pdf = save(spec, out)
        spec.figure.clear()  # Agg figures hold their buffers until collected; free them now
        written.append((spec, png))
        figure_paths += [png, pdf]
        if spec.placeholder:
            warnings.append(f"Fig. {spec.number} ({spec.stem}) is a placeholder: {spec.missing}")

    html_path, md_path = out / "report.html", out / "report.md"
    items = outline(data, table, written, warnings, settings=settings, fails=fails, beyond=beyond)
    html = render_html(data, items)
    _write_text(html_path, html)
    md = render_markdown(data, items)
    _write_text(md_path, md)
    return ReportResult(
        sweep_id=data.sweep.id,
        out_dir=out,
        html=html_path,
        markdown=md_path,
        figures=tuple(figure_paths),
        paths=(*figure_paths, html_path, md_path),
        seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
    )
