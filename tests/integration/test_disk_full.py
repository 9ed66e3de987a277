"""A CONVLAB_HOME on a small real file system (a tmpfs), real worker processes, Redis and PostgreSQL.

The decoded-data cache is best effort: where it does not fit, the training goes on with the arrays in
memory and nothing of the cache is left taking the space its checkpoints need. Where not even a checkpoint
fits, the run fails with one line saying so, and a retry once space was freed finishes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.filesystems import fill, small_filesystem
from tests.integration.conftest import base_env
from tests.integration.harness import Stack
from tests.integration.test_recovery import submit_training, wait_until_ended

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOME_MB = 24  # less than the data decodes to (30.7 MB), more than a smoke training's files


@pytest.fixture(scope="module")
def larger_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """10,000 images: the cache (30.7 MB decoded) does not fit the home; the smoke profile trains on 300."""
    from tests.datagen import write_fake_imagenet_weights, write_tiny_cifar10

    folder = tmp_path_factory.mktemp("larger_data")
    tarball = write_tiny_cifar10(folder, n_train=9000, n_test=1000, as_tar=True)
    weights = write_fake_imagenet_weights(folder / "weights", alpha=0.25)
    return {"CONVLAB_CIFAR10": str(tarball), "CONVLAB_WEIGHTS_DIR": str(weights)}


@pytest.fixture
def small_stack(
    tmp_path: Path, larger_data: dict[str, str], pg_database: str, redis_broker: str
) -> Iterator[Stack]:
    """Redis + PostgreSQL (no submit-time preflight, as for a worker on another machine), the home on a
    small tmpfs; the workers' logs stay outside it."""
    with small_filesystem(tmp_path / "home", HOME_MB) as home:
        env = base_env(home, larger_data)
        env.update(CONVLAB_DATABASE_URL=pg_database, CONVLAB_BROKER_URL=redis_broker)
        stack = Stack(home=tmp_path, env=env)
        try:
            yield stack
        finally:
            stack.stop_all()


def _home(stack: Stack) -> Path:
    return Path(stack.env["CONVLAB_HOME"])


def _temporaries(stack: Stack) -> list[str]:
    return sorted(str(p) for p in _home(stack).rglob("*") if ".tmp" in p.name)


def test_a_home_too_small_for_the_data_cache_still_trains(small_stack: Stack) -> None:
    run_id = submit_training(small_stack)
    small_stack.start_worker("w1")
    state = wait_until_ended(small_stack, run_id, "w1", timeout=600)
    assert state["status"] == "succeeded", state["error"]
    assert _temporaries(small_stack) == []  # no partial cache file taking the disk
    assert list((_home(small_stack) / "cache").glob("cifar10-*.npz")) == []  # it did not fit: not written
    checked = small_stack.orchestrator("check", run_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_full_home_fails_the_checkpoint_in_one_line_and_a_retry_after_freeing_space_succeeds(
    small_stack: Stack,
) -> None:
    home = _home(small_stack)
    ballast = fill(home, leave_bytes=1_000_000)  # less than a smoke checkpoint (about 2.8 MB)
    run_id = submit_training(small_stack)
    small_stack.start_worker("w1")
    state = wait_until_ended(small_stack, run_id, "w1", timeout=600)
    assert state["status"] == "failed"
    error = state["error"]
    assert "\n" not in error
    assert error.startswith(f"ExperimentError: disk full under {home}/artifacts/runs/{run_id}/"), error
    assert "MB free)" in error and "(needs ~" in error
    assert _temporaries(small_stack) == []  # the failed save took its partial model file with it

    ballast.unlink()
    assert shutil.disk_usage(home).free > 10_000_000
    retried = small_stack.orchestrator("retry", run_id, "--no-wait")
    assert retried.returncode == 0, retried.stderr
    state = wait_until_ended(small_stack, run_id, "w1", timeout=600)
    assert state["status"] == "succeeded", state["error"]
    checked = small_stack.orchestrator("check", run_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr
