"""`orchestrator export`: one row per run and epoch with the run's settings, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import main
from storage.models import RunStatus
from tests.unit.orchestrator.results_db import Planned, add_reused, add_sweep, database, epoch_record


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


PLAN = [
    Planned("scratch", "scratch", epochs=3, start=0.1),
    Planned("imagenet", "imagenet", epochs=3, done=2, status=RunStatus.RUNNING, start=0.4),
    Planned("finetune+bn-frozen", "finetune", epochs=2, start=0.2, spec_extra={"tune_bn": "frozen"}),
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_csv_holds_one_row_per_run_and_epoch_with_its_settings(home: Path) -> None:
    settings, db = database(home)
    ids = add_sweep(settings, db, PLAN)
    result = invoke("export", ids["sweep"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["label"], int(r["epoch"])) for r in rows] == [
        ("scratch", 1), ("scratch", 2), ("scratch", 3), ("imagenet", 1), ("imagenet", 2),
        ("finetune+bn-frozen", 1), ("finetune+bn-frozen", 2),
    ]  # fmt: skip
    by_plan = {p.label: p for p in PLAN}
    for row in rows:
        plan = by_plan[row["label"]]
        expected = epoch_record(plan, int(row["epoch"])).to_dict()
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"):
            assert float(row[key]) == expected[key], (row["label"], key)
        assert row["phase"] == "train" and row["sweep_id"] == ids["sweep"]
        assert row["run_id"] == ids[row["label"]] and row["reused_from"] == ""
        assert row["spec.regime"] == plan.regime and row["spec.alpha"] == "0.25"
        assert int(row["spec.epochs"]) == plan.epochs
    assert {r["status"] for r in rows if r["label"] == "imagenet"} == {"running"}
    # A setting only one run holds is a column, empty for the others.
    assert {r["spec.tune_bn"] for r in rows} == {"", "frozen"}


def test_json_to_a_file_holds_the_same_rows_and_a_reused_run_names_its_source(
    home: Path, tmp_path: Path
) -> None:
    settings, db = database(home)
    first = add_sweep(settings, db, PLAN[:1])
    again = add_reused(db, first["scratch"], "scratch")
    out = tmp_path / "exports" / "rows.json"
    result = invoke("export", again["sweep"], "--format", "json", "--out", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert f"wrote 3 rows (1 training) to {out}" in result.stderr
    rows = json.loads(out.read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {r["run_id"] for r in rows} == {again["scratch"]} and {r["reused_from"] for r in rows} == {
        first["scratch"]
    }
    as_csv = list(csv.DictReader(io.StringIO(invoke("export", first["scratch"]).stdout)))
    assert [float(r["val_accuracy"]) for r in as_csv] == [r["val_accuracy"] for r in rows]
    assert "spec.tune_bn" not in rows[0]  # JSON: a setting the run does not hold is absent


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "s-nosuchsweep"], "s-nosuchsweep"),
        (["export", "r-nosuchrun0"], "r-nosuchrun0"),
        (["export", "--format", "xml"], "--format: must be one of csv, json; got 'xml'"),
    ],
)
def test_bad_input_is_one_line_exit_2(home: Path, args: list[str], expected: str) -> None:
    database(home)
    result = invoke(*args)
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_out_naming_a_folder_is_refused_and_nothing_is_written(home: Path, tmp_path: Path) -> None:
    settings, db = database(home)
    ids = add_sweep(settings, db, PLAN[:1])
    folder = tmp_path / "a-folder"
    folder.mkdir()
    result = invoke("export", ids["sweep"], "--out", str(folder))
    assert result.exit_code == 2 and "--out:" in result.stderr and "is a folder" in result.stderr
    assert list(folder.iterdir()) == []


def test_a_visualization_has_no_epochs_to_export(home: Path) -> None:
    from storage import repository as repo
    from storage.models import RunKind

    _, db = database(home)
    with db.session() as s:
        run = repo.create_run(
            s, sweep_id=None, kind=RunKind.VISUALIZE, label="sine", spec={}, spec_hash="x", seed=0
        )
    result = invoke("export", run.id)
    assert result.exit_code == 2
    assert f"{run.id}: a visualize run has no epochs; give a training or a sweep" in result.stderr
