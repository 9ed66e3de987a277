"""Input the engine would refuse hours later is refused at submit, through the real CLI (a subprocess):
one line naming the option, exit 2, and nothing written (no sweep row, no artifact folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.unit.orchestrator.test_cli import nothing_written

ROOT = Path(__file__).resolve().parents[3]


def orchestrator(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env["CONVLAB_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_refused(result: subprocess.CompletedProcess[str], home: Path, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]
    assert nothing_written(home)
    assert not (home / "artifacts").exists()  # no photo staged, no run folder


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's file: a PNG that declares 400 Mpx in about 49 KB (a 1-bit blank image compresses)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)
    assert path.stat().st_size < 100_000
    return path


def test_a_decompression_bomb_is_refused_naming_its_size(bomb: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = orchestrator(home, "submit", "all", "--profile", "smoke", "--no-wait", "--image", str(bomb))
    assert_refused(result, home, "--image:", "20000x20000", "400.0 Mpx", "at most 89.5 Mpx")


def test_an_image_between_pils_warning_and_error_thresholds_is_refused_too(tmp_path: Path) -> None:
    """100 Mpx: PIL only warns (DecompressionBombWarning) and would decode it all."""
    photo = tmp_path / "big.png"
    Image.new("1", (10_000, 10_000)).save(photo)
    home = tmp_path / "home"
    result = orchestrator(
        home, "submit", "visualize", "--profile", "smoke", "--no-wait", "--image", str(photo)
    )
    assert_refused(result, home, "--image:", "10000x10000", "100.0 Mpx")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("vis_layers=conv_pw_12,conv_pw_14", ("vis_layers:", "no layer 'conv_pw_14'", "conv_pw_1..13")),
        ("vis_layers=block5_conv3", ("vis_layers:", "no layer 'block5_conv3'")),
        ("vis_input_size=16", ("vis_input_size:", "between 32 and 512")),
        ("vis_steps=0", ("vis_steps:", "between 1 and")),
        ("vis_step_size=0", ("vis_step_size:", "> 0.0")),
    ],
)
def test_visualization_settings_the_engine_would_refuse(
    setting: str, expected: tuple[str, ...], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = orchestrator(home, "submit", "all", "--profile", "smoke", "--no-wait", "--set", setting)
    assert_refused(result, home, *expected)


def test_a_real_layer_other_than_the_default_is_accepted() -> None:
    from contract.profiles import resolve_profile

    values = resolve_profile("smoke", {"vis_layers": "conv_dw_13_relu,conv1"})
    assert values["vis_layers"] == ("conv_dw_13_relu", "conv1")
