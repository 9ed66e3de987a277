"""`orchestrator compare`: the settings that differ and the accuracies side by side, within 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import main
from storage.models import RunStatus
from tests.unit.orchestrator.results_db import Planned, add_sweep, database

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(*args: str, columns: int = 80) -> Result:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)


def _two_sweeps(home: Path) -> tuple[str, str]:
    settings, db = database(home)
    a = add_sweep(
        settings,
        db,
        [
            Planned("scratch", "scratch", epochs=1, start=0.1),
            Planned("imagenet", "imagenet", epochs=1, start=0.4),
        ],
    )
    b = add_sweep(
        settings,
        db,
        [
            Planned("scratch", "scratch", epochs=3, start=0.2),
            Planned("imagenet", "imagenet", epochs=3, done=1, status=RunStatus.CANCELLED, start=0.5),
            Planned("imagenet+upscaled+augment", "imagenet", epochs=3, start=0.6),
        ],
        overrides={"epochs": "3"},
        code_version="0.1.0+src.other",
        plan="explain",
    )
    return a["sweep"], b["sweep"]


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def test_compare_shows_what_differs_and_the_accuracies_side_by_side(home: Path) -> None:
    a, b = _two_sweeps(home)
    result = invoke("compare", a, b)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), text
    rows = _rows(text)
    assert rows["setting"] == [a, b]
    assert rows["epochs"] == ["1", "3"]  # smoke's 1 against --set epochs=3
    assert rows["plan"] == ["all", "explain"] and rows["code"] == ["0.1.0+src.test", "0.1.0+src.other"]
    assert "alpha" not in rows and "profile" not in rows  # the same in both: not listed
    assert rows["training"] == [a, b]
    assert rows["scratch"] == ["10.0", "/", "10.0", "30.0", "/", "30.0"]
    assert rows["imagenet"] == ["40.0", "/", "40.0", "50.0", "/", "50.0*"]  # cancelled after epoch 1
    assert rows["imagenet+upscaled+augment"] == ["–", "70.0", "/", "70.0"]
    assert "* unfinished" in text and "–: no such training in that sweep" in text


def test_in_a_pipe_it_is_laid_out_to_80_columns_and_many_sweeps_split_into_blocks(home: Path) -> None:
    settings, db = database(home)
    ids = [
        add_sweep(settings, db, [Planned("finetune+bn-frozen+upscaled+augment", "finetune", epochs=2)],
                  overrides={"lr": str(10.0 ** -k)})["sweep"]
        for k in range(2, 8)
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "compare", *ids],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), done.stdout
    # Every sweep's column is there, and the long label is never cut: it heads each block's row.
    assert all(any(i in line for line in lines) for i in ids)
    label_rows = [line for line in lines if line.startswith("finetune+bn-frozen+upscaled+augment ")]
    assert len(label_rows) >= 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compare"], "compare: give two sweeps or more"),
        (["compare", "s-nosuchsweep", "s-nosuchswee2"], "s-nosuchsweep"),
    ],
)
def test_bad_input_is_one_line_exit_2(home: Path, args: list[str], expected: str) -> None:
    database(home)
    result = invoke(*args)
    assert result.exit_code == 2 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_same_sweep_twice_is_refused(home: Path) -> None:
    a, _ = _two_sweeps(home)
    result = invoke("compare", a, a)
    assert result.exit_code == 2 and f"sweep {a} is given twice" in result.stderr
