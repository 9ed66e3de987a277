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
