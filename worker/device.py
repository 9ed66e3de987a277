"""What a task runs on, in words, for the ``device`` column (e.g. ``GPU 0: NVIDIA H200`` or ``CPU``)."""

from __future__ import annotations

import platform


def describe_device() -> str:
    """Ask the active Keras backend which accelerator it sees. Imports the backend: call in tasks only."""
    import keras

    backend = keras.backend.backend()
    names: list[str] = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(gpu)
                names.append(str(details.get("device_name", gpu.name)))
        elif backend == "jax":
            import jax

            names = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
        elif backend == "torch":
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a device query must never fail a run
        names = []
    if names:
        return (
            f"GPU {names[0]} ({backend})" if len(names) == 1 else f"{len(names)} GPUs {names[0]} ({backend})"
        )
    from contract.host import cpu_name

    return f"CPU {cpu_name()} ({backend})"


def describe_environment(compile_cache: str) -> dict[str, str]:
    """Versions a result depends on, recorded on the run for the report's provenance; ``compile_cache``
    says whether compiled programs came from the persistent cache (what ``enable_compile_cache`` did)."""
    import keras

    from contract.version import code_version

    backend = keras.backend.backend()
    environment = {
        "keras_version": keras.__version__,
        "keras_backend": backend,
        "dtype_policy": keras.config.dtype_policy().name,
        "python": platform.python_version(),
        # The code this worker runs (the report flags a worker whose code differs from the submitter's).
        "code": code_version(),
        "compile_cache": compile_cache,
    }
    try:
        module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend])
        environment[f"{backend}_version"] = str(module.__version__)
    except (KeyError, ImportError, AttributeError):
        pass
    return environment
