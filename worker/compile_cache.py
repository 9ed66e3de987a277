"""Compile once per machine, not once per task: a persistent XLA compilation cache for the task processes.

Every task runs in a fresh process, so without a cache on disk each one compiles its training step again
(bare Keras on JAX, on an H200: a repeat first epoch takes 16 s with JAX's persistent cache instead of
53 s). :func:`enable_compile_cache` points the active Keras backend at ``Settings.compile_cache_dir``
(``$CONVLAB_HOME/cache/xla``; ``CONVLAB_COMPILE_CACHE=off`` turns it off). Call it in the task process
before the backend compiles anything.

JAX (``KERAS_BACKEND=jax``): JAX's persistent compilation cache, one file per compiled program, keyed by a
hash of the program, its compile options, the devices and the jax/jaxlib/XLA versions (an upgrade misses,
it never loads a stale program). Programs that compiled in at least :data:`MIN_COMPILE_SECONDS` are
written (JAX's default, 1 s, would leave out about half of them: in a MobileNet training task on CPU, 37
of 48 programs took 0.1 s or more, 18 took 1 s or more). On a GPU, XLA's per-fusion autotuning results go
to ``<dir>/xla_gpu_per_fusion_autotune_cache_dir/`` (JAX's ``jax_persistent_cache_enable_xla_caches``,
set explicitly so a changed default cannot move or drop it). XLA's kernel cache
(``xla_gpu_kernel_cache_file``) is not enabled: it is one file that each process reads, extends and
writes back, and one it cannot parse fails the compilation.

Several task processes sharing the folder, as read in JAX 0.10.2 (``jax/_src/lru_cache.py``,
``compilation_cache.py``, ``compiler.py``): with no size limit (``jax_compilation_cache_max_size=-1``,
the default, kept: a limit needs the ``filelock`` package) the cache takes no lock and writes in place,
without a temporary file: ``put`` leaves a key whose file exists alone, else writes the file with one
``write_bytes``. An entry is the compressed (zlib here; zstd where installed) compile time and serialized
executable. So:

- two processes compiling the same program at once both write the same file, each all of its entry from
  the start: the file ends as one whole entry, at worst followed by the tail of a longer one, which zlib
  ignores (it stops at the end of its stream);
- a process that reads an entry another one is still writing gets a truncated stream; decompression
  fails, JAX turns the error into a warning (``jax_raise_persistent_cache_errors`` is off, left off) and
  compiles the program itself. Tested in tests/unit/worker/test_compile_cache.py: a truncated entry costs
  a warning and a compile, the run goes on;
- a process killed while writing leaves a truncated entry behind, and JAX never replaces an existing
  entry: every later process warns and compiles that one program afresh, until the folder is deleted;
- XLA writes an autotuning result to a temporary file and renames it into place.

TensorFlow (the default backend): TF has a persistent cache for the programs it compiles with XLA,
``TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...`` (tried with TF 2.21; the flag is in TF's sources
from before 2.16, the oldest convlab allows, not tried there: an unknown flag aborts the process). Keras
compiles with XLA only where a GPU is visible (``jit_compile="auto"`` turns XLA off on CPU-only
machines), so on CPU this cache stays empty. TF writes an entry to a temporary file and renames it into
place (it warns where the filesystem cannot rename atomically), but it reads an entry unforgivingly: a
damaged entry fails the computation instead of being compiled again (tried here: a truncated entry raised
``OutOfRangeError: Read less bytes than requested``). Its file names carry no TF version
(``xla_compile_cache__<signature>__<HLO hash>__<device>.pb``), so each version gets its own subfolder. TF
reads ``TF_XLA_FLAGS`` lazily: set after ``import tensorflow``, before the first computation, it is used
(tried here).

Trust: a cache entry is machine code the worker loads and runs. Whoever can write the folder can make the
workers run any code, with their access to the database, the artifacts and the broker. The folder is
created private (0700); one that belongs to another user or that others may write is not used (the run is
recorded with the cache off, and why). That guards against the plain mistake, it is no audit of every
folder above it: keep ``$CONVLAB_HOME`` as private as the code itself, and on a shared machine give each
user their own ``$CONVLAB_HOME``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

# Programs that compile faster than this are not written: a file each for little gain (in a MobileNet
# training task on CPU, bench/compile_cache.py: 11-21 of 48 programs, well under 0.1 s each).
MIN_COMPILE_SECONDS = 0.1

_TF_FLAG = "--tf_xla_persistent_cache_directory"


def unsafe_reason(cache_dir: Path) -> str | None:
    """Why ``cache_dir`` must not be used (someone else could write programs into it); None if it may."""
    info = cache_dir.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{cache_dir} belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{cache_dir} is writable by other users"
    return None


def enable_compile_cache(cache_dir: Path | None) -> str:
    """Point the active Keras backend at the persistent compilation cache ``cache_dir`` (None: off).

    Idempotent; never raises for a cache problem (a run goes on without the cache). Returns what was
    done, in words, for the run's provenance: e.g. ``jax persistent cache at /home/x/cache/xla``, ``off``.
    """
    import keras  # fixes the backend; importing it compiles nothing (checked on JAX; TF compiles lazily)

    backend = keras.backend.backend()
    off = "off"
    if cache_dir is not None:
        try:
            cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            reason = unsafe_reason(cache_dir)
        except OSError as exc:
            reason = f"cannot use {cache_dir}: {exc.strerror or exc}"
        if reason is not None:
            cache_dir, off = None, f"off: {reason}"
    if backend == "jax":
        return _jax(cache_dir) or off
    if backend == "tensorflow":
        return _tensorflow(cache_dir) or off
    return off if cache_dir is None else f"off ({backend} backend: no persistent compilation cache)"


def _jax(cache_dir: Path | None) -> str | None:
    import jax

    if cache_dir is None:
        # Off means off, even where JAX_COMPILATION_CACHE_DIR is set in the environment.
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    with contextlib.suppress(AttributeError):  # an option of JAX >= 0.4.32
        jax.config.update("jax_persistent_cache_enable_xla_caches", "xla_gpu_per_fusion_autotune_cache_dir")
    return f"jax persistent cache at {cache_dir}"


def _tensorflow(cache_dir: Path | None) -> str | None:
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if cache_dir is not None:
        import tensorflow as tf  # already imported by Keras

        tf_dir = cache_dir / f"tensorflow-{tf.__version__}"
        ours = f"{_TF_FLAG}={tf_dir}"
        described = f"tensorflow XLA cache at {tf_dir} (used where Keras compiles with XLA: on GPU)"
        if ours in flags.split():
            return described
    if _TF_FLAG in flags:
        return "tensorflow XLA cache as TF_XLA_FLAGS sets it"
    if cache_dir is None:
        return None
    if any(c.isspace() for c in str(tf_dir)):  # TF_XLA_FLAGS is split at whitespace
        return f"off: TF_XLA_FLAGS cannot name {tf_dir} (it has a space)"
    os.environ["TF_XLA_FLAGS"] = f"{flags} {ours}".strip()
    return described
