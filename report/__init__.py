"""The sweep report: figures 1-8 of the seed, the results table and provenance, as HTML and Markdown.

Reads storage and artifacts only; never imports TensorFlow, Keras or Celery. ``build_report`` and
``ReportResult`` load lazily, so importing this package (e.g. for the error types) does not pull in
matplotlib (~0.6 s) and the CLI stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from report.data import NoSweepError, ReportError, UnknownSweepError

if TYPE_CHECKING:
    from report.build import ReportResult, build_report

__all__ = ["NoSweepError", "ReportError", "ReportResult", "UnknownSweepError", "build_report"]


def __getattr__(name: str) -> Any:
    if name in ("build_report", "ReportResult"):
        from report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
