"""What a task reads back is what was recorded: checksums are verified before a checkpoint is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.settings import load_settings
from storage import repository as repo
from storage.db import get_database, reset_databases
from storage.errors import ArtifactError
from storage.folder_store import FolderStore
from storage.models import RunKind
from worker.context import RunContext
from worker.experiments.checkpoints import CheckpointState
from worker.heartbeat import RunHeartbeat
from worker.runners import verified_checkpoint


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    db = get_database(settings)
    with db.session() as s:
        run_id = repo.create_run(
            s, sweep_id=None, kind=RunKind.TRAIN, label="scratch", spec={}, spec_hash="h", seed=1
        ).id
        fence = repo.claim_run(s, run_id, worker="w", device="cpu", lease_seconds=60).fence  # type: ignore[union-attr]
    store = FolderStore(settings.artifacts_dir)
    context = RunContext(
        settings=settings,
        db=db,
        store=store,
        run_id=run_id,
        fence=fence,
        spec={},
        worker="w",
        heartbeat=RunHeartbeat(db, run_id, fence, interval=60),
    )
    folder = f"{context.attempt_dir()}/checkpoint"
    files = [
        store.write_bytes(f"{folder}/model-e0001.keras", b"weights"),
        store.write_bytes(
            f"{folder}/state-e0001.json",
            json.dumps(CheckpointState("h", 1, "train", 0, 0).to_dict()).encode(),
        ),
    ]
    with db.session() as s:
        repo.commit_checkpoint_files(
            s, run_id, fence=fence, files=[(f.path, f.sha256, f.size) for f in files]
        )
    yield context
    reset_databases()


def test_a_recorded_checkpoint_is_returned(ctx: RunContext) -> None:
    state = f"{ctx.attempt_dir()}/checkpoint/state-e0001.json"
    assert verified_checkpoint(ctx, ctx.run_id, state) == ctx.store.absolute(state)


@pytest.mark.parametrize("name", ["model-e0001.keras", "state-e0001.json"])
def test_a_changed_checkpoint_file_fails_naming_it(ctx: RunContext, name: str) -> None:
    path = ctx.store.absolute(f"{ctx.attempt_dir()}/checkpoint/{name}")
    path.write_bytes(path.read_bytes().replace(b"e", b"E", 1))
    with pytest.raises(ArtifactError, match=f"{name}.*corrupt"):
        verified_checkpoint(ctx, ctx.run_id, f"{ctx.attempt_dir()}/checkpoint/state-e0001.json")


def test_an_unrecorded_checkpoint_is_refused(ctx: RunContext) -> None:
    with pytest.raises(ArtifactError, match="not recorded"):
        verified_checkpoint(ctx, ctx.run_id, "runs/elsewhere/state-e0001.json")


def test_a_staged_photo_is_verified_against_its_submit_time_sha256(ctx: RunContext) -> None:
    from worker.runners import resolve_image

    stored = ctx.store.write_bytes("inputs/abc.jpg", b"photo")
    assert resolve_image(ctx, "artifact:inputs/abc.jpg", stored.sha256) == str(
        ctx.store.absolute("inputs/abc.jpg")
    )
    ctx.store.absolute("inputs/abc.jpg").write_bytes(b"another photo")
    with pytest.raises(ArtifactError, match="inputs/abc.jpg.*corrupt"):
        resolve_image(ctx, "artifact:inputs/abc.jpg", stored.sha256)
