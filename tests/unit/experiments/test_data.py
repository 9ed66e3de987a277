from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.datagen import write_tiny_cifar10
from tests.filesystems import small_filesystem
from worker.experiments import data
from worker.experiments.data import load_cifar10
from worker.experiments.errors import DataError


def test_tarball_folder_and_parent_give_same_arrays(cifar_tar: Path, cifar_folder: Path) -> None:
    a, b, c = load_cifar10(cifar_tar), load_cifar10(cifar_folder), load_cifar10(cifar_folder.parent)
    for other in (b, c):
        for name in ("x_train", "y_train", "x_val", "y_val"):
            assert np.array_equal(getattr(a, name), getattr(other, name))
    assert a.x_train.shape == (200, 32, 32, 3) and a.x_train.dtype == np.uint8
    assert a.y_train.dtype == np.int64 and a.x_val.shape == (100, 32, 32, 3)
    assert a.class_names[0] == "airplane" and len(a.class_names) == 10


def test_balanced_subset_is_deterministic_and_not_a_prefix(cifar_folder: Path) -> None:
    full = load_cifar10(cifar_folder)
    one = load_cifar10(cifar_folder, train_limit=50, val_limit=30, seed=7)
    two = load_cifar10(cifar_folder, train_limit=50, val_limit=30, seed=7)
    other = load_cifar10(cifar_folder, train_limit=50, val_limit=30, seed=8)
    assert np.bincount(one.y_train).tolist() == [5] * 10
    assert np.bincount(one.y_val).tolist() == [3] * 10
    assert np.array_equal(one.x_train, two.x_train) and np.array_equal(one.y_val, two.y_val)
    assert not np.array_equal(one.x_train, other.x_train)
    # the test split is ordered by class: a prefix would hold classes 0-2 only
    assert not np.array_equal(one.x_val, full.x_val[:30])


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(DataError, match="nowhere.tar.gz"):
        load_cifar10(missing)
    with pytest.raises(DataError, match=str(tmp_path)):
        load_cifar10(tmp_path)  # an existing folder without the data


def test_truncated_tarball(cifar_tar: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cifar-10-python.tar.gz"
    data = cifar_tar.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_cifar10(cut)


def test_wrong_format_file_and_batch(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a tarball")
    with pytest.raises(DataError, match="notes.txt"):
        load_cifar10(text)
    folder = write_tiny_cifar10(tmp_path / "bad", n_train=50, n_test=20)
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": np.zeros((10, 5), np.uint8), b"labels": [0] * 10})
    )
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(folder)


def test_disk_cache_is_keyed_by_the_source_file(cifar_tar: Path, tmp_path: Path) -> None:
    from worker.experiments import data as data_module

    source = tmp_path / "cifar-10-python.tar.gz"
    source.write_bytes(cifar_tar.read_bytes())  # a private copy: the session fixture stays intact
    cache = tmp_path / "cache"
    load_cifar10(source, cache_dir=cache)
    (cached,) = cache.glob("cifar10-*.npz")
    data_module._CACHE.clear()  # what a fresh task process starts with
    source.write_bytes(b"")  # the source changed (size and mtime) ...
    with pytest.raises(DataError):
        load_cifar10(source, cache_dir=cache)  # ... so it is read again, never served from the stale cache
    assert cached.exists()


def test_disk_cache_is_used_for_an_unchanged_source(cifar_tar: Path, tmp_path: Path) -> None:
    from worker.experiments import data as data_module

    cache = tmp_path / "cache"
    first = load_cifar10(cifar_tar, cache_dir=cache)
    data_module._CACHE.clear()
    decoded = []
    original = data_module._read_tarball
    data_module._read_tarball = lambda path: decoded.append(path) or original(path)  # type: ignore[assignment]
    try:
        second = load_cifar10(cifar_tar, cache_dir=cache)
    finally:
        data_module._read_tarball = original  # type: ignore[assignment]
    assert decoded == []  # read from the cache, not decoded again
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_val, second.y_val)
    assert first.class_names == second.class_names


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_cache_that_would_not_leave_room_is_not_written(
    cifar_tar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Less free space than the cache plus what checkpoints need after it: decoded in memory only."""
    data._CACHE.clear()
    monkeypatch.setattr(data, "free_bytes", lambda _path: data.CACHE_KEEP_FREE_BYTES)
    cache = tmp_path / "cache"
    loaded = load_cifar10(cifar_tar, cache_dir=cache)
    assert len(loaded.x_train) == 200
    assert _cache_files(cache) == []


def test_a_cache_write_that_fills_the_disk_removes_its_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real path on a real (small) file system: the check passed (another process filled the disk
    after it), the write stops with ENOSPC mid-way, and what it wrote is removed, not left taking the
    space every checkpoint after it needs."""
    source = write_tiny_cifar10(tmp_path / "src", n_train=2000, n_test=500, as_tar=True)  # 7.7 MB decoded
    data._CACHE.clear()
    monkeypatch.setattr(data, "free_bytes", lambda _path: 10**12)
    with small_filesystem(tmp_path / "small", 4) as small:
        cache = small / "cache"
        loaded = load_cifar10(source, cache_dir=cache, train_limit=100)
        assert len(loaded.x_train) == 100  # the training goes on with the arrays decoded in memory
        assert _cache_files(cache) == []  # no partial .tmp.npz left behind
        usage = shutil.disk_usage(small)
        assert usage.used < 256 * 1024, usage  # every byte it took is free again


def test_a_killed_writers_old_temporary_file_is_removed(cifar_tar: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".cifar10-0123.npz.999.tmp.npz", cache / ".cifar10-0123.npz.998.tmp.npz"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    data._CACHE.clear()
    load_cifar10(cifar_tar, cache_dir=cache)
    assert not stale.exists()
    assert fresh.exists()  # maybe another task still writing it
