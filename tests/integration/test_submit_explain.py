"""`orchestrator submit explain` end to end on the embedded default: every run, then a Beyond section."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.plans import EXPLAIN_VARIANTS
from tests.integration.harness import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_submit_explain_runs_the_variants_and_reports_them(embedded_stack: Stack) -> None:
    done = embedded_stack.orchestrator("submit", "explain", "--profile", "smoke", timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_id = re.search(r"sweep (s-\w+)", done.stdout).group(1)  # type: ignore[union-attr]
    runs = json.loads(embedded_stack.orchestrator("status", "--json", check=True).stdout)["runs"]
    assert {r["status"] for r in runs} == {"succeeded"}, runs
    labels = sorted(r["label"] for r in runs if r["kind"] == "train")
    assert labels == sorted(["scratch", "imagenet", "finetune", *(v.label for v in EXPLAIN_VARIANTS)])
    folder = embedded_stack.settings.artifacts_dir / "sweeps" / sweep_id / "report"
    md = (folder / "report.md").read_text()
    assert "## Beyond the seed" in md and "## Exercise 4" not in md
    for variant in EXPLAIN_VARIANTS:
        assert f"| {variant.label} |" in md
    assert (folder / "fig9_beyond_accuracy.png").is_file() and (folder / "fig10_beyond_loss.pdf").is_file()
    assert "| Network input |" in md and "48×48 (CIFAR-10 upscaled, bilinear)" in md
