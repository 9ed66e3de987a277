"""`submit explain`: bad input is one line naming the field, exit 2, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.orchestrator.test_cli import home, invoke, nothing_written

__all__ = ["home"]  # the fixture, shared with test_cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--set", "explain_input_size=32"],
            "explain_input_size: must be larger than input_size (32) and at most 512, got 32",
        ),
        (
            ["--set", "explain_input_size=1024"],
            "explain_input_size: must be larger than input_size (32) and at most 512, got 1024",
        ),
        (["--set", "tune_bn=inference"], "tune_bn: must be one of batch, frozen"),
        (["--set", "augment=maybe"], "augment: expected true or false"),
        (["--seeds", "0"], "--seeds: must be between 1 and 100"),
    ],
)
def test_bad_explain_input_is_one_line_exit_2_and_writes_nothing(
    home: Path, args: list[str], expected: str
) -> None:
    result = invoke("submit", "explain", "--profile", "smoke", *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert nothing_written(home)


def test_help_names_the_plan_and_its_knobs(home: Path) -> None:
    result = invoke("submit", "explain", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "BatchNorm" in text and "explain_input_size" in text and "augmentation" in text
