"""The files convlab reads as inputs, by name, known without importing Keras or NumPy: CIFAR-10's
official python layout and Keras's MobileNet weight files. The engine (``worker.experiments``), the
submit-time checks and the object-store resolver (``storage.remote_inputs``) all use these names, so a
folder, a tarball and an object-store prefix are recognised by one rule."""

from __future__ import annotations

CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
# Every file the engine reads from an extracted folder (worker.experiments.data._read_folder).
CIFAR_FOLDER_FILES = (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META)

# Keras's own names for the no-top ImageNet weights at 224 (the conv weights fit any input size, so the
# file depends on the width alone); tests/unit/orchestrator/test_preflight.py keeps them in step.
WEIGHTS_ALPHA_TEXT = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}


def weights_file_name(alpha: float) -> str:
    return f"mobilenet_{WEIGHTS_ALPHA_TEXT[alpha]}_224_tf_no_top.h5"


WEIGHTS_FILE_NAMES = tuple(weights_file_name(alpha) for alpha in WEIGHTS_ALPHA_TEXT)
