"""`orchestrator check`: every problem a paused attempt or a bad disk could leave is found and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from contract.records import EpochRecord
from contract.settings import load_settings
from orchestrator.cli import main
from storage import repository as repo
from storage.db import get_database, reset_databases
from storage.folder_store import FolderStore
from storage.models import ArtifactKind, EpochMetric, Run, RunKind, RunStatus

EPOCH_VALUES = {"phase": "train", "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4, "lr": 1e-4}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    reset_databases()


def _finished_training(home: Path) -> tuple[str, str, str]:
    """A succeeded 2-epoch training with its checkpoint and a visualization with one image, as a worker
    leaves them. Returns (training id, visualization id, sweep id)."""
    settings = load_settings()
    db, store = get_database(settings), FolderStore(settings.artifacts_dir)
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        train = repo.create_run(
            s,
            sweep_id=sweep,
            kind=RunKind.TRAIN,
            label="scratch",
            spec={},
            spec_hash="a",
            seed=1,
            total_epochs=2,
        ).id
        vis = repo.create_run(
            s, sweep_id=sweep, kind=RunKind.VISUALIZE, label="random", spec={}, spec_hash="b", seed=1
        ).id
        fence = repo.claim_run(s, train, worker="w", device="cpu", lease_seconds=60).fence  # type: ignore[union-attr]
        vis_fence = repo.claim_run(s, vis, worker="w", device="cpu", lease_seconds=60).fence  # type: ignore[union-attr]
    folder = f"runs/{train}/attempt-{fence}/checkpoint"
    history = [{"epoch": n, "loss": 1.0 / n, **EPOCH_VALUES} for n in (1, 2)]
    state = {"epoch": 2, "model_file": "model-e0002.keras", "history": history}
    model = store.write_bytes(f"{folder}/model-e0002.keras", b"weights")
    state_file = store.write_bytes(f"{folder}/state-e0002.json", json.dumps(state).encode())
    image = store.write_bytes(f"runs/{vis}/attempt-{vis_fence}/input.png", b"png")
    with db.session() as s:
        for record in history:
            checkpoint = state_file.path if record["epoch"] == 2 else None
            values = EpochRecord(seconds=1.0, images_per_second=10.0, **record)  # type: ignore[arg-type]
            repo.record_epoch(s, train, values, fence=fence, checkpoint=checkpoint)
        repo.commit_checkpoint_files(
            s, train, fence=fence, files=[(f.path, f.sha256, f.size) for f in (model, state_file)]
        )
        repo.add_artifact(
            s, vis, fence=vis_fence, kind=ArtifactKind.IMAGE, path=image.path, sha256=image.sha256, size=3
        )
        assert repo.finish_run(s, train, RunStatus.SUCCEEDED, fence=fence)
        assert repo.finish_run(s, vis, RunStatus.SUCCEEDED, fence=vis_fence)
    return train, vis, sweep


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_an_intact_home_passes(home: Path) -> None:
    train, _, sweep = _finished_training(home)
    for target in ((), (train,), (sweep,)):
        code, out = _check(*target)
        assert code == 0 and "all intact" in out, out
    assert "checked 2 run(s), 3 artifact(s)" in _check()[1]


def test_a_corrupt_or_missing_file_is_named(home: Path) -> None:
    train, vis, _ = _finished_training(home)
    artifacts = home / "artifacts"
    image = next((artifacts / "runs" / vis).rglob("input.png"))
    image.write_bytes(b"changed")
    next((artifacts / "runs" / train).rglob("model-e0002.keras")).unlink()
    code, out = _check()
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith(f"{vis}: runs/{vis}/") and "input.png: corrupt" in line for line in lines), out
    assert any(line.startswith(f"{train}: ") and "model-e0002.keras: missing" in line for line in lines), out
    assert lines[-1].endswith("2 problem(s)")


def test_epoch_rows_that_differ_from_the_checkpoint_are_found(home: Path) -> None:
    """What a paused attempt that was not fenced would leave: its values in a row of the winner's run."""
    train, _, _ = _finished_training(home)
    with get_database(load_settings()).session() as s:
        s.execute(
            update(EpochMetric).where(EpochMetric.run_id == train, EpochMetric.epoch == 2).values(loss=9.0)
        )
    code, out = _check(train)
    assert code == 1 and f"{train}: epoch 2: the database row differs from the checkpoint" in out


def test_a_checkpoint_behind_the_last_epoch_is_found(home: Path) -> None:
    train, _, _ = _finished_training(home)
    with get_database(load_settings()).session() as s:
        s.execute(update(Run).where(Run.id == train).values(last_epoch=3, total_epochs=3))
    code, out = _check(train)
    assert code == 1 and "describes epoch 2, but the run's last epoch is 3" in out


def test_an_unknown_target_is_bad_input(home: Path) -> None:
    _finished_training(home)
    code, out = _check("r-nope")
    assert code == 2 and "r-nope" in out


def test_check_follows_a_cached_run_to_the_run_it_reuses_and_repair_marks_that_run(home: Path) -> None:
    train, _, _ = _finished_training(home)
    with get_database(load_settings()).session() as s:
        later = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        cached = repo.create_run(
            s,
            sweep_id=later,
            kind=RunKind.TRAIN,
            label="scratch",
            spec={},
            spec_hash="a",
            seed=1,
            status=RunStatus.SUCCEEDED,
            reused_run_id=train,
        ).id
    assert _check(later)[0] == 0
    next((home / "artifacts" / "runs" / train).rglob("model-e0002.keras")).write_bytes(b"changed")
    code, out = _check(later)
    assert code == 1 and f"{cached}: reuses {train}: runs/{train}/" in out and "corrupt" in out, out

    code, out = _check(later, "--repair")
    assert code == 1 and f"{train}: marked failed (damaged)" in out, out
    with get_database(load_settings()).session() as s:
        run = repo.get_run(s, train)
        assert run.status == RunStatus.FAILED and "damaged after it succeeded" in (run.error or "")
    code, out = _check(later, "--repair")
    assert "marked" not in out  # marked once; the files stay as they are for whoever looks
