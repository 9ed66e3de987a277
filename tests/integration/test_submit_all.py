"""`orchestrator submit all` end to end, as a user runs it: one command, no server, a finished report."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.harness import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_submit_all_on_the_embedded_default_runs_everything_then_reuses_it(embedded_stack: Stack) -> None:
    started = time.monotonic()
    first = embedded_stack.orchestrator("submit", "all", "--profile", "smoke", timeout=900)
    elapsed = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    sweep_id = re.search(r"sweep (s-\w+)", first.stdout).group(1)  # type: ignore[union-attr]
    assert first.stdout.splitlines()[0] == f"sweep {sweep_id}"  # the sweep id comes first

    runs = json.loads(embedded_stack.orchestrator("status", "--json", check=True).stdout)["runs"]
    assert {r["status"] for r in runs} == {"succeeded"}, runs
    assert sorted(r["kind"] for r in runs) == ["report"] + ["train"] * 3 + ["visualize"] * 3
    report = embedded_stack.settings.artifacts_dir / "sweeps" / sweep_id / "report" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    print(f"\nsubmit all --profile smoke (embedded, tiny data): {elapsed:.1f} s")

    again = embedded_stack.orchestrator("submit", "all", "--profile", "smoke", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 run(s) reuse identical earlier runs" in again.stdout
    second = json.loads(embedded_stack.orchestrator("status", "--json", check=True).stdout)["runs"]
    assert sorted(r["status"] for r in second) == ["cached"] * 6 + ["succeeded"]  # only the report ran

    # A plan whose every run is reused ends at once, with no worker started for it.
    cached = embedded_stack.orchestrator(
        "submit", "train", "--regime", "scratch", "--profile", "smoke", timeout=300
    )
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "reuse identical earlier runs" in cached.stdout
    assert "started local worker" not in cached.stdout + cached.stderr
