"""Tiny stand-ins for the real data, written in the official layouts (shared by several test suites).

Nothing here downloads: CIFAR-10 pickles are synthesized, "ImageNet" weights are a random-init base saved
under Keras's file name.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# One clearly different colour per class, so a tiny network learns the labels in a few steps.
_PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [20, 20, 20], [250, 250, 250],
    ],
    dtype=np.int16,
)  # fmt: skip


def _images(labels: np.ndarray, rng: np.random.Generator, learnable: bool) -> np.ndarray:
    """uint8 rows of 3072 (channel-major), like the official pickles."""
    if learnable:
        base = _PALETTE[labels][:, None, None, :]  # (n,1,1,3)
        noise = rng.integers(-30, 31, size=(len(labels), 32, 32, 3))
        nhwc = np.clip(base + noise, 0, 255).astype(np.uint8)
    else:
        nhwc = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return nhwc.transpose(0, 3, 1, 2).reshape(len(labels), -1).copy()


def write_tiny_cifar10(
    folder: Path,
    *,
    n_train: int = 200,
    n_test: int = 100,
    as_tar: bool = False,
    learnable: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``cifar-10-batches-py/`` (5 train batches, test batch ordered by class, batches.meta).

    Returns the folder, or with ``as_tar`` the path of a ``cifar-10-python.tar.gz`` holding it.
    """
    rng = np.random.default_rng(seed)
    out = Path(folder) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    y_train = rng.permutation(np.arange(n_train) % 10)
    x_train = _images(y_train, rng, learnable)
    for i, (xs, ys) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5), strict=True)):
        batch = {b"batch_label": f"training batch {i + 1} of 5".encode(), b"data": xs, b"labels": ys.tolist()}
        (out / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    y_test = np.sort(np.arange(n_test) % 10)  # ordered by class: a prefix subset would be one class
    test = {b"batch_label": b"testing batch 1 of 1", b"data": _images(y_test, rng, learnable),
            b"labels": y_test.tolist()}  # fmt: skip
    (out / "test_batch").write_bytes(pickle.dumps(test))
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES], b"num_cases_per_batch": n_train // 5}
    (out / "batches.meta").write_bytes(pickle.dumps(meta))
    if not as_tar:
        return out
    tar_path = Path(folder) / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(out, arcname="cifar-10-batches-py")
    return tar_path


def write_fake_imagenet_weights(folder: Path, alpha: float = 0.25) -> Path:
    """A random-init MobileNet base saved as legacy .h5 under Keras's name; returns ``folder``.

    ``model.save(... .h5)`` writes the legacy layout (``model_weights`` group) that
    ``MobileNet(weights=path)`` / ``load_weights`` read for a plain ``.h5`` name (``save_weights`` in Keras 3
    insists on ``.weights.h5``, a different format).
    """
    import keras

    from worker.experiments.models import weights_file_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = keras.applications.MobileNet(
        input_shape=(224, 224, 3), alpha=alpha, include_top=False, weights=None
    )
    # Move BatchNorm statistics off their defaults so a test can tell loaded weights from fresh ones.
    rng = np.random.default_rng(1)
    base.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in base.get_weights()])
    base.save(str(folder / weights_file_name(alpha)))
    return folder
