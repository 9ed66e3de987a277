"""`orchestrator tensorboard`: event files written from the database, read back with TensorBoard's reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.results import load_sweeps
from orchestrator.tensorboard_export import SCALARS, EventFiles, crc32c
from storage import repository as repo
from storage.db import Database
from storage.models import RunStatus
from tests.services import IN_CI
from tests.unit.orchestrator.results_db import Planned, add_sweep, database, epoch_record

ROOT = Path(__file__).resolve().parents[3]


def _accumulator(run_dir: Path) -> Any:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        if IN_CI:
            pytest.fail("tensorboard is not installed (it is in the dev extra)")
        pytest.skip(
            "tensorboard is not installed: pip install '.[dev]' (or tensorboard) to read the files back"
        )
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _rows(db: Database, run_id: str) -> list[Any]:
    with db.session(readonly=True) as s:
        return repo.metric_history(s, run_id)


def test_crc32c_is_castagnolis() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


def test_every_training_is_a_run_folder_whose_scalars_are_the_database_rows(
    home: Path, tmp_path: Path
) -> None:
    settings, db = database(home)
    ids = add_sweep(
        settings,
        db,
        [
            Planned("scratch", "scratch", epochs=3, start=0.1),
            Planned("imagenet", "imagenet", seed=0, epochs=2, start=0.4),
            Planned("imagenet", "imagenet", seed=1, epochs=2, start=0.45),
        ],
    )
    logdir = tmp_path / "tb"
    result = CliRunner().invoke(
        main, ["tensorboard", ids["sweep"], "--logdir", str(logdir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"wrote 3 trainings (7 epochs) under {logdir}" in result.stdout
    assert f"tensorboard --logdir {logdir}" in result.stdout
    folders = {
        "scratch": logdir / ids["sweep"] / "scratch",
        "imagenet": logdir / ids["sweep"] / "imagenet" / "seed-0",
        "imagenet/seed-1": logdir / ids["sweep"] / "imagenet" / "seed-1",
    }
    for key, folder in folders.items():
        acc = _accumulator(folder)
        assert set(acc.Tags()["scalars"]) == set(SCALARS)
        rows = _rows(db, ids[key])
        for tag in SCALARS:
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [r.epoch for r in rows]
            assert [e.value for e in events] == pytest.approx([getattr(r, tag) for r in rows], rel=1e-6)
            assert [e.wall_time for e in events] == pytest.approx([r.recorded_at.timestamp() for r in rows])
    # Written again: the same files' content, not duplicates.
    again = CliRunner().invoke(
        main, ["tensorboard", ids["sweep"], "--logdir", str(logdir)], catch_exceptions=False
    )
    assert again.exit_code == 0
    assert [e.step for e in _accumulator(folders["scratch"]).Scalars("loss")] == [1, 2, 3]
    assert len(list(folders["scratch"].glob("events.out.tfevents.*"))) == 1


def test_following_appends_epochs_as_they_land_and_a_rewritten_epoch_gets_a_fresh_file(
    home: Path, tmp_path: Path
) -> None:
    settings, db = database(home)
    plan = Planned("scratch", "scratch", epochs=4, done=2, status=RunStatus.RUNNING)
    ids = add_sweep(settings, db, [plan])
    files = EventFiles(tmp_path / "tb")

    def sync() -> list[Any]:
        with db.session(readonly=True) as s:
            return files.sync(load_sweeps(s, [ids["sweep"]]))

    assert [w.new_epochs for w in sync()] == [2]
    assert sync() == []  # nothing new
    with db.session() as s:
        fence = repo.get_run(s, ids["scratch"]).fence
        repo.record_epoch(s, ids["scratch"], epoch_record(plan, 3), fence=fence)
    (written,) = sync()
    assert written.new_epochs == 1 and not written.rewritten
    folder = written.run_dir
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # appended to the same file
    assert [e.step for e in _accumulator(folder).Scalars("val_accuracy")] == [1, 2, 3]
    # A resumed attempt recomputes epoch 3: a fresh file replaces the old one.
    changed = epoch_record(plan, 3).__class__(**{**epoch_record(plan, 3).to_dict(), "val_accuracy": 0.99})
    with db.session() as s:
        repo.record_epoch(s, ids["scratch"], changed, fence=fence)
    (written,) = sync()
    assert written.rewritten
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    values = [e.value for e in _accumulator(folder).Scalars("val_accuracy")]
    assert values[-1] == pytest.approx(0.99) and len(values) == 3


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_follow_command_shows_live_epochs_and_stops_on_ctrl_c(home: Path, tmp_path: Path) -> None:
    settings, db = database(home)
    plan = Planned("imagenet", "imagenet", epochs=5, done=1, status=RunStatus.RUNNING)
    ids = add_sweep(settings, db, [plan])
    logdir = tmp_path / "tb"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONVLAB_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "tensorboard", "--logdir", str(logdir),
         "--follow", "--every", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        folder = logdir / ids["sweep"] / "imagenet"
        _wait("the first event file", lambda: any(folder.glob("events.out.tfevents.*")))
        with db.session() as s:
            fence = repo.get_run(s, ids["imagenet"]).fence
            repo.record_epoch(s, ids["imagenet"], epoch_record(plan, 2), fence=fence)
        _wait(
            "epoch 2 in TensorBoard", lambda: [e.step for e in _accumulator(folder).Scalars("loss")] == [1, 2]
        )
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"{ids['sweep']}/imagenet: +1 epoch(s)" in out
    assert "stopped following" in err


def test_an_unknown_sweep_or_a_logdir_that_is_a_file_is_one_line_exit_2(home: Path, tmp_path: Path) -> None:
    database(home)
    unknown = CliRunner().invoke(main, ["tensorboard", "s-nosuchsweep", "--logdir", str(tmp_path / "tb")])
    assert unknown.exit_code == 2 and "s-nosuchsweep" in unknown.stderr
    assert not (tmp_path / "tb").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    refused = CliRunner().invoke(main, ["tensorboard", "--logdir", str(a_file)])
    assert refused.exit_code == 2 and f"--logdir: {a_file} is a file, not a folder" in refused.stderr
