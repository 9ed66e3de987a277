"""Warm task processes: a worker slot's process imports Keras once and runs task after task.

What is reused: the interpreter, the imported framework and engine, the decoded CIFAR-10 arrays
(``worker.experiments.data._CACHE``, read-only), and the compiled models of the last trainings
(``worker.experiments.kept_models``: a training of the same graph is trained on one of them, its
variables and optimizer state overwritten with the new training's, so that its step is not traced again).
What is isolated, after every task, in :class:`TaskScope`: the Keras session
(``keras_state.clear_session``: the layer-name counters, the global seed generator and dtype policy; the
task's models, except those kept, are garbage; TensorFlow's kernel cache is kept), Keras's global
configuration (``floatx``, ``epsilon``, image data format, dtype policy, back to what the process started
with), the random generators (Python's and NumPy's re-seeded from the OS, as a fresh process is;
TensorFlow's global seed unset, where a task set it), the environment variables and the working
directory, the task's SIGTERM handler. What cannot be put back is not: the process is replaced
(recycled) before the next task instead, with the reason logged, when

- the task did not end cleanly (failed, cancelled, lost its run or its database, handed back, raised):
  its state is not trusted;
- the process got SIGTERM (it is being stopped);
- the task left files open or Python threads running;
- it has run ``CONVLAB_TASKS_PER_PROCESS`` tasks;
- its resident memory is above ``CONVLAB_PROCESS_MEMORY_MB``.

A task that kills its process (segfault, OOM kill, ``os._exit``) is a lost process as before: Celery
replaces it, the message is re-queued (``task_reject_on_worker_lost``) and the lease recovers the run.

The recycle itself happens in :mod:`worker.pool`, between tasks: only after the task's result was sent.
Not isolated: TensorFlow's op determinism (turned on by a training, never off; only makes ops
deterministic) and, on a GPU, the memory TensorFlow's allocator has reserved (it keeps what the largest
task of the process needed; with one slot it takes the whole GPU at start anyway).
"""

from __future__ import annotations

import gc
import logging
import os
import random
import site
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.settings import Settings
from worker import shutdown

log = logging.getLogger(__name__)

# Ends after which the process serves the next task; any other end recycles it. A cancelled task is
# not one: it was stopped mid-work, and a user who cancels expects its process to end (the chaos suite
# checks that it does).
CLEAN_ENDS = frozenset({"succeeded", "not started"})


@dataclass
class _ProcessState:
    tasks: int = 0
    keras_config: dict[str, Any] | None = None
    environ: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    recycle: str | None = None  # why this process must not take another task


_state = _ProcessState()


def prepare_process(settings: Settings) -> None:
    """In a new task process (``worker_process_init``), before its first task: import Keras (through the
    compile cache, which must set TensorFlow's flags before that import), so the first task is warm too,
    and remember what each task must leave as it found it. Never call in the worker's main process: the
    framework's threads do not survive the fork that makes the next task process."""
    started = time.perf_counter()
    try:
        from worker.compile_cache import enable_compile_cache

        enable_compile_cache(settings.compile_cache_dir)
        import keras

        _state.keras_config = _keras_config(keras)
        log.info("task process %d imported Keras in %.1f s", os.getpid(), time.perf_counter() - started)
    except Exception:  # noqa: BLE001 - a broken framework must fail the runs that need it, not the process
        log.exception("this task process could not import Keras ahead of its tasks; they will try again")
    _state.environ = dict(os.environ)
    _state.cwd = os.getcwd()


def recycle_reason() -> str | None:
    """Why this process must be replaced before its next task (None: it may take one)."""
    return _state.recycle


def tasks_run() -> int:
    return _state.tasks


class TaskScope:
    """One task in a warm process: ``with TaskScope(settings, run_id) as scope: ...; scope.ended(end)``."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self._settings = settings
        self._run_id = run_id
        self._end: str | None = None
        self._fds: set[str] = set()
        self._threads: set[threading.Thread] = set()
        self._handler: Any = None

    def __enter__(self) -> TaskScope:
        self._fds = _open_files() - _database_files(self._settings)
        self._threads = set(threading.enumerate())
        self._handler = shutdown.install_child_handler()  # SIGTERM: stop at the next epoch boundary
        return self

    def ended(self, end: str) -> None:
        """How the attempt ended (:class:`worker.attempt.End`'s value)."""
        self._end = end

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        _state.tasks += 1
        shutdown.restore_child_handler(self._handler)
        reasons = []
        if exc_type is not None:
            reasons.append(f"the task raised {exc_type.__name__}")
        elif self._end not in CLEAN_ENDS:
            reasons.append(f"the task ended {self._end}")
        if shutdown.signalled():
            reasons.append("it got SIGTERM")
        _reset_framework()
        left_threads = [t.name for t in threading.enumerate() if t not in self._threads and t.is_alive()]
        if left_threads:
            reasons.append(f"the task left threads running: {', '.join(sorted(left_threads))}")
        left_files = sorted(_open_files() - self._fds - _database_files(self._settings))
        if left_files:
            reasons.append(f"the task left files open: {', '.join(left_files)}")
        if _state.tasks >= self._settings.tasks_per_process:
            reasons.append(f"it ran {_state.tasks} tasks (CONVLAB_TASKS_PER_PROCESS)")
        rss = resident_mb()
        if rss is not None and rss > self._settings.process_memory_mb:
            reasons.append(
                f"its resident memory is {rss:.0f} MB, above {self._settings.process_memory_mb:.0f} MB "
                "(CONVLAB_PROCESS_MEMORY_MB)"
            )
        if reasons:
            _state.recycle = "; ".join(reasons)
        else:
            _restore_process()
        log.info(
            "task process %d: task %d (%s) ended %s, %s MB resident",
            os.getpid(),
            _state.tasks,
            self._run_id,
            self._end or "with an exception",
            "?" if rss is None else f"{rss:.0f}",
        )


def _keras_config(keras: types.ModuleType) -> dict[str, Any]:
    return {
        "floatx": keras.config.floatx(),
        "epsilon": keras.config.epsilon(),
        "image_data_format": keras.config.image_data_format(),
        "dtype_policy": keras.config.dtype_policy().name,
    }


def _reset_framework() -> None:
    """Drop what the task built in Keras (models, traced steps, global state), if Keras is loaded."""
    if _state.keras_config is None:
        return
    import keras

    from worker.experiments import keras_state

    keras_state.clear_session()  # TensorFlow's kernel cache stays: the kept models' kernels are in it
    config = _state.keras_config
    keras.config.set_floatx(config["floatx"])
    keras.config.set_epsilon(config["epsilon"])
    keras.config.set_image_data_format(config["image_data_format"])
    keras.config.set_dtype_policy(config["dtype_policy"])
    if "matplotlib" in sys.modules:  # a report's or a visualization's figures and style settings
        import matplotlib
        import matplotlib.pyplot as plt

        plt.close("all")
        matplotlib.rc_file_defaults()
    gc.collect()


def _restore_process() -> None:
    """What a fresh process would find: unseeded generators, the process's environment and folder."""
    random.seed()
    import numpy as np

    np.random.seed()
    if _state.keras_config is not None:
        from worker.experiments import keras_state

        if keras_state.tensorflow_seed_is_set():  # setting it empties TF's kernel cache: only if set
            import tensorflow as tf

            tf.random.set_seed(None)
    if _state.environ:
        for key in set(os.environ) - set(_state.environ):
            del os.environ[key]
        os.environ.update(_state.environ)
    if _state.cwd:
        os.chdir(_state.cwd)


_NOT_THE_TASKS = tuple(
    {
        "/dev/",
        "/proc/",
        *(str(Path(p).resolve()) + "/" for p in {sys.prefix, sys.base_prefix, *site.getsitepackages()}),
    }
)


def _open_files() -> set[str]:
    """This process's open regular files ("fd -> path"); pipes, sockets and devices are not counted
    (the pool's pipes, the database's sockets, the framework's event fds), nor the files of the Python
    installation (libraries keep such files open as their own caches: matplotlib its fonts)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return set()
    found = set()
    for entry in fds.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # the listing's own fd, closed already
        if target.startswith("/") and not target.startswith(_NOT_THE_TASKS) and Path(target).is_file():
            found.add(f"{entry.name} -> {target}")
    return found


def _database_files(settings: Settings) -> set[str]:
    """The embedded SQLite database's files: open on purpose, the process's engine outlives its tasks."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        return set()
    db = url[len("sqlite:///") :]
    names = {db, f"{db}-wal", f"{db}-shm", f"{db}-journal"}
    return {f for f in _open_files() if f.split(" -> ", 1)[1] in names}


def resident_mb() -> float | None:
    """This process's resident memory now, in MB (None where /proc cannot say)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
