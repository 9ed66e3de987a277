"""CIFAR-10 from the official python-pickle layout, read by us (no private Keras modules).

Why our own reader: the shared copy of the data set is a rebuilt tarball whose sha256 differs from the
official one, so ``keras.datasets.cifar10.load_data()`` refuses it from its cache; and a worker that runs
many tasks should decode the 170 MB tarball once per process (see ``_CACHE``), not once per task.

Subsets (``train_limit``/``val_limit``) are class-balanced and drawn with ``seed``: the test split may be
ordered by class, so a prefix would be neither balanced nor representative.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.disk import CACHE_KEEP_FREE_BYTES, free_bytes
from contract.inputs import CIFAR_FOLDER, CIFAR_META, CIFAR_TARBALL, CIFAR_TEST_BATCH, CIFAR_TRAIN_BATCHES
from worker.experiments.errors import DataError

# The layout's names live in the contract: the submit checks and the object-store resolver share them.
TARBALL_NAME = CIFAR_TARBALL
FOLDER_NAME = CIFAR_FOLDER
TRAIN_BATCHES = CIFAR_TRAIN_BATCHES
TEST_BATCH = CIFAR_TEST_BATCH
META = CIFAR_META
NUM_CLASSES = 10
_ROW = 32 * 32 * 3
_STALE_TEMPORARY_SECONDS = 3600


@dataclass(frozen=True)
class Cifar10:
    """Images as uint8 (N, 32, 32, 3) and integer labels; ``x_val`` is the official test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: tuple[str, ...]


# Full decoded arrays per source: (resolved path, mtime_ns, size) -> Cifar10. Never mutated by us.
_CACHE: dict[tuple[str, int, int], Cifar10] = {}


def load_cifar10(
    path: str | os.PathLike[str] | None = None,
    *,
    train_limit: int | None = None,
    val_limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Cifar10:
    """Load CIFAR-10 from a tarball, a ``cifar-10-batches-py`` folder (or its parent), or Keras (``None``).

    Limits select a deterministic class-balanced subset (class counts differ by at most one); the same
    ``seed`` gives the same subset. The full arrays are also kept in memory for the life of the process
    (read-only: writing into them raises): a warm task process (``worker.warm``) decodes once for all its
    tasks, as do tests, benches and an engine caller training several specs.
    With ``cache_dir``, the decoded arrays are also kept there as one ``.npz`` per source file: a new task
    process, or another worker on the host, reads them there: decoding the 170 MB tarball costs seconds,
    reading the cache a fraction of one.
    """
    full = _load_keras() if path is None else _load_cached(Path(path), cache_dir)
    rng = np.random.default_rng(seed)
    train_idx = balanced_indices(full.y_train, train_limit, rng)
    val_idx = balanced_indices(full.y_val, val_limit, rng)
    return Cifar10(
        x_train=full.x_train if train_idx is None else full.x_train[train_idx],
        y_train=full.y_train if train_idx is None else full.y_train[train_idx],
        x_val=full.x_val if val_idx is None else full.x_val[val_idx],
        y_val=full.y_val if val_idx is None else full.y_val[val_idx],
        class_names=full.class_names,
    )


def balanced_indices(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted indices of ``limit`` samples taken round-robin over classes from per-class permutations.

    Round-robin (rank 0 of every class, then rank 1, ...) keeps counts within one of each other even when a
    class is short. ``None`` means "all samples" (no copy).
    """
    if limit is None or limit >= len(labels):
        return None
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    longest = max(len(p) for p in per_class)
    ranks = np.full((longest, len(per_class)), -1, dtype=np.int64)
    for column, members in enumerate(per_class):
        ranks[: len(members), column] = members
    order = ranks.reshape(-1)
    chosen = order[order >= 0][:limit]
    return np.sort(chosen)


def _load_keras() -> Cifar10:
    import keras

    try:
        (x_train, y_train), (x_val, y_val) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # noqa: BLE001 - offline, proxy, truncated cache: one actionable line
        raise DataError(
            f"CIFAR-10: no path given and Keras's download (cifar10.load_data) failed: {exc}; "
            "give the path of cifar-10-python.tar.gz (CONVLAB_CIFAR10)"
        ) from None
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return Cifar10(
        x_train, y_train.reshape(-1).astype(np.int64), x_val, y_val.reshape(-1).astype(np.int64), names
    )


def _load_cached(path: Path, cache_dir: str | os.PathLike[str] | None = None) -> Cifar10:
    source = _resolve_source(path)
    stat = source.stat()
    key = (str(source.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE.clear()  # keep one data set: a second source would double 180 MB of arrays
        disk = _disk_cache_path(cache_dir, key) if cache_dir is not None else None
        data = _read_disk_cache(disk) if disk is not None else None
        if data is None:
            data = _read_tarball(source) if source.is_file() else _read_folder(source)
            if disk is not None:
                _write_disk_cache(disk, data)
        for array in (data.x_train, data.y_train, data.x_val, data.y_val):
            # Shared by every later task of a warm process: a task that wrote into them would change the
            # next one's data, so a write raises instead.
            array.flags.writeable = False
        _CACHE[key] = data
    return _CACHE[key]


def _disk_cache_path(cache_dir: str | os.PathLike[str], key: tuple[str, int, int]) -> Path:
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]  # a changed source file is a new entry
    return Path(cache_dir) / f"cifar10-{digest}.npz"


def _read_disk_cache(file: Path) -> Cifar10 | None:
    """The cached arrays, or None when absent or unreadable (then the source is decoded again)."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            return Cifar10(
                npz["x_train"],
                npz["y_train"],
                npz["x_val"],
                npz["y_val"],
                tuple(str(n) for n in npz["names"]),
            )
    except (OSError, KeyError, ValueError):
        return None


def _write_disk_cache(file: Path, data: Cifar10) -> None:
    """Best effort and atomic: a cache that cannot be written only costs the next task the decoding.

    So it must never cost more: it is written only when ``CACHE_KEEP_FREE_BYTES`` stay free after it (the
    room of the run's checkpoints), and a write that fails (the disk filled meanwhile) removes its
    temporary file, which would otherwise keep every byte it took and fail the checkpoints after it.
    """
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp.npz")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(file.parent)
        if free_bytes(file.parent) < cache_bytes(data) + CACHE_KEEP_FREE_BYTES:
            return  # decoded in memory this time; the next task tries again
        np.savez(
            tmp,
            x_train=data.x_train,
            y_train=data.y_train,
            x_val=data.x_val,
            y_val=data.y_val,
            names=np.array(data.class_names),
        )
        os.replace(tmp, file)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)  # after the rename it no longer exists: only a failed write's


def cache_bytes(data: Cifar10) -> int:
    """About what the cache file of ``data`` takes on disk (the arrays; the npz headers are small)."""
    return sum(a.nbytes for a in (data.x_train, data.y_train, data.x_val, data.y_val)) + 64 * 1024


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary cache files a killed task left (a SIGKILL runs no ``finally``). A write takes seconds:
    one older than ``_STALE_TEMPORARY_SECONDS`` has no writer any more, on any host sharing the folder."""
    now = time.time()
    for leftover in folder.glob(".cifar10-*.tmp.npz"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TEMPORARY_SECONDS:
                leftover.unlink(missing_ok=True)
        except OSError:
            pass


def _resolve_source(path: Path) -> Path:
    """The tarball or the ``cifar-10-batches-py`` folder that ``path`` designates."""
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path, path / FOLDER_NAME):
            if (candidate / TEST_BATCH).is_file():
                return candidate
        if (path / TARBALL_NAME).is_file():
            return path / TARBALL_NAME
        raise DataError(f"{path}: folder holds neither {FOLDER_NAME}/ (with {TEST_BATCH}) nor {TARBALL_NAME}")
    raise DataError(f"{path}: no such file or folder (expected {TARBALL_NAME} or a {FOLDER_NAME}/ folder)")


def _read_tarball(path: Path) -> Cifar10:
    blobs: dict[str, bytes] = {}
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        blobs[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 tarball ({type(exc).__name__}: {exc})") from None
    missing = sorted(wanted - set(blobs))
    if missing:
        raise DataError(f"{path}: tarball lacks {', '.join(missing)} (not the official CIFAR-10 layout)")
    return _decode({name: _unpickle(data, f"{path}:{name}") for name, data in blobs.items()}, path)


def _read_folder(folder: Path) -> Cifar10:
    batches = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file}: missing (the official CIFAR-10 layout has {name} here)")
        batches[name] = _unpickle(file.read_bytes(), str(file))
    return _decode(batches, folder)


def _unpickle(data: bytes, where: str) -> dict[bytes, Any]:
    try:
        obj = pickle.loads(data, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise DataError(f"{where}: not a CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _decode(batches: dict[str, dict[bytes, Any]], where: Path) -> Cifar10:
    parts = [_batch_arrays(batches[name], f"{where}:{name}") for name in TRAIN_BATCHES]
    x_val, y_val = _batch_arrays(batches[TEST_BATCH], f"{where}:{TEST_BATCH}")
    names = batches[META].get(b"label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"{where}:{META}: expected 10 label_names, got {names!r:.80}")
    return Cifar10(
        x_train=np.concatenate([p[0] for p in parts]),
        y_train=np.concatenate([p[1] for p in parts]),
        x_val=x_val,
        y_val=y_val,
        class_names=tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names),
    )


def _batch_arrays(batch: dict[bytes, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _ROW or data.dtype != np.uint8:
        shape = getattr(data, "shape", None)
        raise DataError(f"{where}: b'data' must be uint8 rows of {_ROW} values, got shape {shape}")
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if y is None or y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() >= NUM_CLASSES)):
        raise DataError(f"{where}: b'labels' must list {data.shape[0]} class ids in 0..9")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue): to NHWC.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y
