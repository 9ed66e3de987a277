"""The sweep report: figures 1-8 of the seed, the results table and provenance, as HTML and Markdown.

Reads storage and artifacts only; never imports TensorFlow, Keras or Celery.
"""

from __future__ import annotations

from orchestrator.report.build import ReportResult, build_report
from orchestrator.report.data import NoSweepError, ReportError, UnknownSweepError

__all__ = ["NoSweepError", "ReportError", "ReportResult", "UnknownSweepError", "build_report"]
