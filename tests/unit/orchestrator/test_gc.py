"""gc's rule on both databases: what no row references is removed, but never a live attempt's files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchestrator.gc import RunState, find_garbage, grace_seconds, is_garbage, remove
from storage import repository as repo
from storage.artifacts import ArtifactStore, ListedFile
from storage.db import Database
from storage.folder_store import FolderStore
from storage.models import RunStatus
from tests.storage.helpers import make_run, start

LEASE = 60.0


def _write(store: ArtifactStore, relpath: str, data: bytes = b"x" * 100) -> tuple[str, str, int]:
    stored = store.write_bytes(relpath, data)
    return stored.path, stored.sha256, stored.size


def _paths(store: ArtifactStore) -> list[str]:
    return [f.path for f in store.list_files()]


def _garbage(db: Database, store: ArtifactStore) -> list[str]:
    return [f.path for f in find_garbage(db, store, lease_seconds=LEASE).files]


def test_a_live_attempts_fresh_unreferenced_files_are_kept(db: Database, tmp_path: Path) -> None:
    """Written, not yet committed: the window every checkpoint and image goes through."""
    store = FolderStore(tmp_path / "artifacts")
    with db.session() as s:
        run_id = make_run(s).id
        fence = start(s, run_id)
    attempt = store.attempt_dir(run_id, fence)
    _write(store, f"{attempt}/checkpoint/model-e0001.keras")
    _write(store, f"{attempt}/checkpoint/.state-e0001.json.77.tmp.json")
    assert _garbage(db, store) == []


def test_a_superseded_attempts_unreferenced_files_go_its_committed_checkpoint_stays(
    db: Database, tmp_path: Path
) -> None:
    store = FolderStore(tmp_path / "artifacts")
    with db.session() as s:
        run_id = make_run(s).id
        first = start(s, run_id)
    old = store.attempt_dir(run_id, first)
    committed = [_write(store, f"{old}/checkpoint/{n}") for n in ("model-e0001.keras", "state-e0001.json")]
    with db.session() as s:
        repo.commit_checkpoint_files(s, run_id, fence=first, files=committed)
    # Killed after writing epoch 2, before committing it: a complete pair and a partial model.
    _write(store, f"{old}/checkpoint/model-e0002.keras")
    _write(store, f"{old}/checkpoint/.model-e0003.keras.41.tmp.keras")
    with db.session() as s:
        assert repo.hand_back_run(s, run_id, fence=first)  # (the reaper does this for a SIGKILL)
        second = start(s, run_id, worker="w2")
    new = store.attempt_dir(run_id, second)
    _write(store, f"{new}/checkpoint/model-e0002.keras")  # the live attempt, not committed yet

    assert _garbage(db, store) == [
        f"{old}/checkpoint/.model-e0003.keras.41.tmp.keras",
        f"{old}/checkpoint/model-e0002.keras",
    ]
    remove(store, find_garbage(db, store, lease_seconds=LEASE))
    assert _paths(store) == [
        f"{old}/checkpoint/model-e0001.keras",
        f"{old}/checkpoint/state-e0001.json",
        f"{new}/checkpoint/model-e0002.keras",
    ]


def test_a_finished_runs_leftovers_go_with_the_folders_they_leave_empty(db: Database, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "artifacts")
    with db.session() as s:
        run_id = make_run(s).id
        fence = start(s, run_id)
        repo.finish_run(s, run_id, RunStatus.FAILED, fence=fence, error="boom")
    stray = f"{store.attempt_dir(run_id, fence)}/checkpoint/.model-e0001.keras.9.tmp.keras"
    _write(store, stray)
    assert _garbage(db, store) == [stray]
    remove(store, find_garbage(db, store, lease_seconds=LEASE))
    assert _paths(store) == []
    assert not store.absolute(store.attempt_dir(run_id, fence)).exists()
    assert store.absolute(store.run_dir(run_id)).is_dir()  # a new attempt may be creating its folder


def test_only_the_runs_asked_for_are_looked_at(db: Database, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "artifacts")
    with db.session() as s:
        ids = [make_run(s, label="a").id, make_run(s, label="b").id]  # queued, never claimed: fence 0
    for run_id in ids:
        _write(store, f"{store.attempt_dir(run_id, 0)}/stray.png")
    found = find_garbage(db, store, lease_seconds=LEASE, run_ids=[ids[0]])
    assert [f.path for f in found.files] == [f"{store.attempt_dir(ids[0], 0)}/stray.png"]


def _rule(
    path: str, *, age: float, runs: dict[str, RunState], referenced: frozenset[str] = frozenset()
) -> bool:
    now = time.time()
    file = ListedFile(path, 10, now - age)
    store = FolderStore(Path("/nonexistent"))
    return is_garbage(
        file, runs=runs, referenced=set(referenced), now=now, grace=grace_seconds(LEASE), store=store
    )


def test_the_rule_for_each_kind_of_file() -> None:
    running = {"r-1": RunState(RunStatus.RUNNING, 3)}
    queued = {"r-1": RunState(RunStatus.QUEUED, 3)}
    path = "runs/r-1/attempt-{}/checkpoint/model-e0001.keras"
    assert not _rule(path.format(3), age=1e6, runs=running)  # the live attempt: never, however old
    assert _rule(path.format(2), age=0, runs=running)  # a superseded one: at once
    assert _rule(path.format(3), age=0, runs=queued)  # handed back / re-queued: it can never commit
    assert not _rule(path.format(4), age=1e6, runs=queued)  # claimed after the read: live
    assert not _rule(path.format(2), age=1e6, runs=running, referenced=frozenset({path.format(2)}))
    # Whose it is cannot be told: only once older than a few leases (a run created after the read).
    grace = grace_seconds(LEASE)
    assert not _rule(path.format(1), age=grace - 5, runs={})
    assert _rule(path.format(1), age=grace + 5, runs={})
    assert not _rule("runs/r-1/notes.txt", age=grace - 5, runs=running)
    assert _rule("runs/r-1/notes.txt", age=grace + 5, runs=running)


def test_stale_temporary_files_outside_runs_go_fresh_ones_and_inputs_stay(
    db: Database, tmp_path: Path
) -> None:
    store = FolderStore(tmp_path / "artifacts")
    _write(store, "inputs/0123456789abcdef.jpg")
    for name in (
        "inputs/.staging.old.tmp",
        "inputs/.staging.new.tmp",
        "sweeps/s-1/report/.report.html.x.tmp",
    ):
        _write(store, name)
    old = time.time() - grace_seconds(LEASE) - 60
    for name in ("inputs/.staging.old.tmp", "sweeps/s-1/report/.report.html.x.tmp"):
        os.utime(store.absolute(name), (old, old))
    assert _garbage(db, store) == ["inputs/.staging.old.tmp", "sweeps/s-1/report/.report.html.x.tmp"]
