"""The code's identity is a hash of the source that runs: installs of different code never share results."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.profiles import resolve_profile
from contract.version import PACKAGES, code_identity, code_version, package_dirs, source_hash
from orchestrator.plans import plan_train
from orchestrator.submit import create_sweep
from storage import repository as repo
from storage.db import Database
from storage.models import RunStatus

ROOT = Path(__file__).resolve().parents[3]
PRINT_IDENTITY = (
    "from contract.version import code_identity, code_version; print(code_identity(), code_version())"
)


def _install(target: Path) -> Path:
    """A copy of the three packages, as `pip install .` lays them out in site-packages (no .git)."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _identity_of(install: Path) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", PRINT_IDENTITY],
        cwd=install.parent,
        env={"PYTHONPATH": str(install), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=1)
    return out[0], out[1].strip()


def test_two_installs_of_the_same_code_agree_and_one_edited_file_changes_the_identity(tmp_path: Path) -> None:
    a, b = _install(tmp_path / "a"), _install(tmp_path / "b")
    identity_a, version_a = _identity_of(a)
    assert identity_a == _identity_of(b)[0] == code_identity()  # same code, wherever it is installed
    assert version_a.split("+")[0].count(".") >= 2 and f"src.{identity_a[:12]}" in version_a
    assert " git " not in version_a  # an installed copy has no checkout: the hash alone names it

    edited = b / "worker" / "experiments" / "regimes.py"
    edited.write_text(edited.read_text() + "\n# a one-line change\n")
    identity_b, version_b = _identity_of(b)
    assert identity_b != identity_a and version_b != version_a


def test_caches_and_data_files_do_not_change_the_identity(tmp_path: Path) -> None:
    install = _install(tmp_path / "site")
    dirs = [install / name for name in PACKAGES]
    before = source_hash(dirs)
    (install / "worker" / "__pycache__").mkdir()
    (install / "worker" / "__pycache__" / "specs.cpython-311.pyc").write_bytes(b"compiled")
    (install / "orchestrator" / "assets" / "notes.txt").write_text("not code")
    assert source_hash(dirs) == before
    (install / "storage" / "new_module.py").write_text("X = 1\n")
    assert source_hash(dirs) != before


def test_identity_is_computed_once_per_process_and_cheaply() -> None:
    assert {p.name for p in package_dirs()} == set(PACKAGES)
    start = time.perf_counter()
    source_hash(package_dirs())
    assert time.perf_counter() - start < 0.5
    assert code_identity() is code_identity() and code_version() is code_version()


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'convlab.db'}")
    database.ensure_schema()
    return database


def test_results_of_other_code_are_never_reused(db: Database) -> None:
    plan = plan_train(resolve_profile("smoke"), regime="scratch", seeds=1, base_seed=0)

    def submit(identity: str) -> tuple[str, tuple[str, ...]]:
        with db.session() as s:
            done = create_sweep(
                s,
                plan,
                profile_name="smoke",
                overrides={},
                code_version=f"0.1.0+src.{identity[:12]}",
                code_identity=identity,
                force=False,
                max_attempts=3,
            )
        return done.run_ids["train/scratch/s0"], done.reused

    old_code, new_code = "a" * 64, "b" * 64
    first, reused = submit(old_code)
    assert reused == ()
    with db.session() as s:  # as if a worker had finished it
        repo.get_run(s, first).status = RunStatus.SUCCEEDED
    _, reused = submit(new_code)
    assert reused == (), "a result computed by other code was reused"
    again, reused = submit(old_code)
    assert reused == (again,)
    with db.session(readonly=True) as s:
        assert repo.get_run(s, again).reused_run_id == first


# ---------------------------------------------------------------- the code a worker runs

FORKED_CHILD_SEES_THE_LOADED_CODE = """
import os, sys
from contract.version import code_identity, source_identity_now
loaded = code_identity()  # what the worker's main process does at start (worker.main)
edited = os.path.join(sys.argv[1], "worker", "runners.py")
with open(edited, "a") as f:
    f.write("\\n# changed under the running worker\\n")
pid = os.fork()
if pid == 0:
    print(code_identity() == loaded, source_identity_now() != loaded, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_task_process_keeps_the_identity_its_worker_loaded_not_the_files_now(tmp_path: Path) -> None:
    install = _install(tmp_path / "site")
    out = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD_SEES_THE_LOADED_CODE, str(install)],
        cwd=install.parent,
        env={"PYTHONPATH": str(install), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["True", "True"]


class _Broker:
    """Stands in for the Celery app's send_task: records what the dispatcher would send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_task(self, name: str, args: list[str], queue: str) -> None:
        self.sent.extend(args)


def _submitted(db: Database, identity: str) -> str:
    plan = plan_train(resolve_profile("smoke"), regime="scratch", seeds=1, base_seed=0)
    with db.session() as s:
        done = create_sweep(
            s,
            plan,
            profile_name="smoke",
            overrides={},
            code_version=f"0.1.0+src.{identity[:12]}",
            code_identity=identity,
            force=False,
            max_attempts=3,
        )
    return done.run_ids["train/scratch/s0"]


def test_a_worker_refuses_a_run_of_other_code_and_leaves_it_queued_for_a_worker_of_that_code(
    db: Database, tmp_path: Path
) -> None:
    from contract.settings import load_settings
    from storage.models import RunKind
    from worker.attempt import End, run_attempt
    from worker.dispatch import dispatch_ready

    settings = load_settings({"CONVLAB_HOME": str(tmp_path), "CONVLAB_HEARTBEAT_SECONDS": "60"})
    other = "b" * 64
    run_id = _submitted(db, other)
    broker = _Broker()
    assert dispatch_ready(broker, db) == [run_id]  # type: ignore[arg-type]
    with db.session() as s:
        repo.mark_received(s, run_id, "w1")
    ran: list[str] = []
    outcome = run_attempt(db, settings, run_id, RunKind.TRAIN, "w1", lambda ctx: ran.append(ctx.run_id))
    assert outcome.end == End.NOT_STARTED and ran == []
    assert f"submitted for code {other[:12]}, this worker runs code {code_identity()[:12]}" in outcome.message
    with db.session(readonly=True) as s:
        run = repo.get_run(s, run_id)
        assert run.status == RunStatus.QUEUED and run.attempts == 0 and run.environment is None
        assert run.enqueued_at is None and run.received_by is None  # the message is forgotten, not lost
        waiting = repo.runs_for_no_live_worker(s, within_seconds=60)
        assert [r.id for r in waiting] == [run_id]
    # This worker's reaper does not send it back to itself; a reaper of the run's code does.
    assert dispatch_ready(broker, db, code=code_identity()) == []  # type: ignore[arg-type]
    assert dispatch_ready(broker, db, code=other) == [run_id]  # type: ignore[arg-type]
    with db.session() as s:
        repo.upsert_worker(s, name="w2", host="h", pid=1, device="CPU", slots=1, code_identity=other)
        assert repo.runs_for_no_live_worker(s, within_seconds=60) == []


def test_a_worker_whose_source_changed_on_disk_claims_nothing_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import worker.code

    loaded = code_identity()
    assert worker.code.claim_refusal(loaded) is None
    assert worker.code.claim_refusal(None) is None  # a run from before the code was recorded
    assert worker.code.sending_code(loaded) == loaded
    monkeypatch.setattr(worker.code, "source_identity_now", lambda: "c" * 64)
    refusal = worker.code.claim_refusal(loaded)
    assert refusal is not None and "changed on disk" in refusal and "restart" in refusal
    assert worker.code.sending_code(loaded) == worker.code.STALE


def test_retry_after_a_code_change_runs_for_the_new_code_and_its_identity_follows(db: Database) -> None:
    from orchestrator.plans import plan_all
    from orchestrator.runs import retry

    plan = plan_all(resolve_profile("smoke"), seeds=1, base_seed=0, photo="random")
    old_code, new_code = "a" * 64, "b" * 64

    def submit(identity: str) -> dict[str, str]:
        with db.session() as s:
            return create_sweep(
                s,
                plan,
                profile_name="smoke",
                overrides={},
                code_version="t",
                code_identity=identity,
                force=False,
                max_attempts=3,
            ).run_ids

    first = submit(old_code)
    with db.session() as s:  # the whole sweep failed or was cancelled
        for run_id in first.values():
            repo.get_run(s, run_id).status = RunStatus.CANCELLED
    sweep_id = _sweep_of(db, first["train/imagenet/s0"])
    retry(db, sweep_id, code_identity=new_code)
    train, vis = first["train/imagenet/s0"], next(v for k, v in first.items() if k.startswith("visualize/"))
    planned = {p.key: p for p in plan.runs}
    new_train_hash = planned["train/imagenet/s0"].identity(new_code)
    vis_key = next(k for k in first if k.startswith("visualize/"))
    with db.session() as s:
        assert {repo.get_run(s, r).code_identity for r in first.values()} == {new_code}
        # What a submit of the new code computes, for a training and for what consumes its model.
        assert repo.get_run(s, train).spec_hash == new_train_hash
        assert repo.get_run(s, vis).spec_hash == planned[vis_key].identity(new_code, (new_train_hash,))
        repo.get_run(s, train).status = RunStatus.SUCCEEDED  # as if a worker of the new code had run it
    again = submit(new_code)
    with db.session(readonly=True) as s:
        assert repo.get_run(s, again["train/imagenet/s0"]).reused_run_id == train  # by the new code only
        assert repo.find_succeeded_by_hash(s, planned["train/imagenet/s0"].identity(old_code)) is None


def _sweep_of(db: Database, run_id: str) -> str:
    with db.session(readonly=True) as s:
        return str(repo.get_run(s, run_id).sweep_id)
