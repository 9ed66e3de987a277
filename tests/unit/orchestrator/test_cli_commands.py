"""status, cancel, retry and report through the CLI on a real SQLite database and the embedded broker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from contract.records import EpochRecord
from contract.settings import load_settings
from orchestrator.cli import main
from storage import repository as repo
from storage.db import get_database
from storage.models import RunKind, RunStatus
from tests.datagen import write_tiny_cifar10
from tests.unit.orchestrator.test_cli import nothing_written

WORKER = "cpu-1a2b3c@a-rather-long-host-name.example.org"
DEVICE = "CPU Intel(R) Xeon(R) Platinum 8488C (tensorflow)"
ERROR = "WeightsError: /a/long/path/to/the/weights/mobilenet_1_0_224_tf_no_top.h5 not found in /a/long/path"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    tarball = write_tiny_cifar10(data, n_train=50, n_test=20, as_tar=True)
    (data / "weights").mkdir()
    (data / "weights" / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"x")
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONVLAB_CIFAR10", str(tarball))
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", str(data / "weights"))
    return tmp_path / "home"


def invoke(*args: str, columns: int | None = None) -> Result:
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def sweep(home: Path) -> dict[str, str]:
    """A sweep as a user sees it mid-way: one training done, one running, one failed, others queued."""
    settings = load_settings()
    db = get_database(settings)
    db.ensure_schema()
    ids: dict[str, str] = {}
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="paper", overrides={}, code_version="test")
        ids["sweep"] = sweep.id
        for label, kind, epochs in (
            ("scratch", RunKind.TRAIN, 60),
            ("imagenet", RunKind.TRAIN, 60),
            ("finetune", RunKind.TRAIN, 60),
            ("sine", RunKind.VISUALIZE, 0),
            ("report", RunKind.REPORT, 0),
        ):
            run = repo.create_run(
                s,
                sweep_id=sweep.id,
                kind=kind,
                label=label,
                spec={},
                spec_hash=label,
                seed=0,
                total_epochs=epochs,
            )
            ids[label] = run.id
        fences = {}
        for label in ("scratch", "imagenet", "sine"):
            claimed = repo.claim_run(s, ids[label], worker=WORKER, device=DEVICE, lease_seconds=60)
            assert claimed is not None
            fences[label] = claimed.fence
        repo.record_epoch(
            s,
            ids["imagenet"],
            EpochRecord(
                epoch=1,
                phase="train",
                loss=1.5,
                accuracy=0.3,
                val_loss=1.6,
                val_accuracy=0.33550000190734863,
                lr=1e-4,
                seconds=60.0,
                images_per_second=800.0,
            ),
            fence=fences["imagenet"],
        )
        repo.finish_run(s, ids["scratch"], RunStatus.SUCCEEDED, fence=fences["scratch"])
        repo.fail_run(s, ids["sine"], ERROR + "\nTraceback (most recent call last): ...")
    return ids


def test_status_fits_80_columns_and_never_cuts_an_id(sweep: dict[str, str]) -> None:
    result = invoke("status", columns=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    for key in ("scratch", "imagenet", "finetune", "sine", "report"):
        assert re.search(rf"(^|\s){sweep[key]}(\s|:|$)", result.output), (key, result.output)
    assert lines[0].startswith(f"sweep {sweep['sweep']}") and "profile paper" in lines[0]
    assert WORKER in result.output  # the dropped worker column's fact, in the header


def test_status_shows_every_column_at_200(sweep: dict[str, str]) -> None:
    result = invoke("status", columns=200)
    assert result.exit_code == 0
    header = next(line for line in result.output.splitlines() if line.startswith("run "))
    for column in ("kind", "what", "progress", "val acc", "ETA", "worker", "device", "tries"):
        assert column in header, header
    assert DEVICE in result.output and "33.6%" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 200


def test_piped_status_is_not_wrapped(sweep: dict[str, str]) -> None:
    result = invoke("status")  # not a terminal, no COLUMNS: a pipe
    assert f"{sweep['sine']}: {ERROR}" in result.output.splitlines()  # the whole first line, one line


def test_run_detail_rounds_floats(sweep: dict[str, str]) -> None:
    text = invoke("status", sweep["imagenet"]).output
    assert "val_accuracy: 0.3355" in text and "0.33550000190734863" not in text
    detail = json.loads(invoke("status", sweep["imagenet"], "--json").output)
    assert detail["val_accuracy"] == pytest.approx(0.3355, abs=1e-4)


def _statuses(home: Path) -> dict[str, str]:
    runs = json.loads(invoke("status", "--json").output)["runs"]
    return {r["id"]: r["status"] for r in runs}


def test_cancelling_one_training_keeps_the_report_and_cancel_sweep_cancels_the_rest(home: Path) -> None:
    submitted = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    assert submitted.exit_code == 0, submitted.output
    runs = json.loads(invoke("status", "--json").output)["runs"]
    by_label = {(r["kind"], r["label"]): r["id"] for r in runs}
    sweep_id = json.loads(invoke("status", "--json").output)["sweep_id"]

    one = invoke("cancel", by_label[("train", "imagenet")])
    assert one.exit_code == 0, one.output
    status = _statuses(home)
    assert status[by_label[("train", "imagenet")]] == "cancelled"
    for image in ("random", "sine", "photo"):  # they look at the imagenet model: cannot run
        assert status[by_label[("visualize", image)]] == "cancelled"
    assert status[by_label[("report", "report")]] == "queued"  # a partial sweep still gets its report
    assert status[by_label[("train", "scratch")]] == "queued"

    whole = invoke("cancel", sweep_id)
    assert whole.exit_code == 0, whole.output
    assert set(_statuses(home).values()) == {"cancelled"}
    assert f"orchestrator retry {sweep_id}" in whole.output

    again = invoke("cancel", sweep_id)
    assert again.exit_code == 2 and "already ended" in again.output


def test_retry_of_a_sweep_without_wait_says_exactly_what_to_run(home: Path) -> None:
    assert invoke("submit", "all", "--profile", "smoke", "--no-wait").exit_code == 0
    sweep_id = json.loads(invoke("status", "--json").output)["sweep_id"]
    assert invoke("cancel", sweep_id).exit_code == 0
    result = invoke("retry", sweep_id, "--no-wait")
    assert result.exit_code == 0, result.output
    assert set(_statuses(home).values()) == {"queued"}
    assert "no worker is running" in result.output and "`orchestrator worker`" in result.output
    not_again = invoke("retry", sweep_id)
    assert not_again.exit_code == 2 and "no failed or cancelled run" in not_again.output


def test_report_out_on_an_existing_file_is_one_line(home: Path, tmp_path: Path) -> None:
    existing = tmp_path / "report.html"
    existing.write_text("mine")
    result = invoke("report", "--out", str(existing))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: --out: {existing} is a file, not a folder; give a folder (created if missing)"
    ]
    assert existing.read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "all", "--seeds", "abc"], "--seeds: 'abc' is not a valid integer"),
        (["submit", "train", "--profile", "smoke"], "Missing option '--regime'. Choose from: scratch"),
        (["cancel"], "Missing argument 'RUN_OR_SWEEP_ID'"),
        (["status", "--colour"], "No such option '--colour'"),
        (["submit", "visualize", "--source", "checkpoint"], "--source: must be one of imagenet, none"),
    ],
)
def test_usage_errors_are_one_line_exit_2(home: Path, args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert nothing_written(home)


def test_help_lists_the_choices() -> None:
    assert "--profile [paper|quick|smoke]" in invoke("submit", "all", "--help").output
    assert "--regime [scratch|imagenet|finetune]" in invoke("submit", "train", "--help").output
    assert "--source [imagenet|none]" in invoke("submit", "visualize", "--help").output
