"""The persistent compilation cache (worker/compile_cache.py), with real JAX and TensorFlow in fresh
processes, as tasks run: what one process compiles, the next one loads."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract.settings import Settings
from storage.models import RunKind
from worker.compile_cache import enable_compile_cache, unsafe_reason

ROOT = Path(__file__).resolve().parents[3]
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

# One task-like process on Keras's JAX backend: turn the cache on (or off), train a tiny model one step,
# print what the cache did, as JAX's monitoring events count it.
JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from worker.compile_cache import enable_compile_cache

    description = enable_compile_cache(None if sys.argv[1] == "off" else Path(sys.argv[1]))
    import jax, keras, numpy as np

    assert keras.backend.backend() == "jax"
    # A tiny model compiles in less than the threshold: write every program, to have something to load.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    events = {}
    jax.monitoring.register_event_listener(lambda e, **_: events.__setitem__(e, events.get(e, 0) + 1))
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    loss = model.fit(np.ones((4, 8)), np.zeros((4, 2)), epochs=1, verbose=0).history["loss"][0]
    print(json.dumps({
        "description": description,
        "hits": events.get("/jax/compilation_cache/cache_hits", 0),
        "written": events.get("/jax/compilation_cache/cache_misses", 0),
        "loss": loss,
    }))
    """
)


def _env(backend: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _start_jax(cache: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", JAX_SCRIPT, cache],
        cwd=ROOT, env=_env("jax", **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _result(proc: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _run_jax(cache: str, **extra: str) -> tuple[dict[str, object], str]:
    return _result(_start_jax(cache, **extra))


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*-cache"))


@pytest.mark.slow
@needs_jax
def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "xla"
    first, _ = _run_jax(str(cache))
    assert first["description"] == f"jax persistent cache at {cache}"
    assert first["hits"] == 0 and first["written"] > 0  # type: ignore[operator]
    entries = _entries(cache)
    assert len(entries) == first["written"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    second, _ = _run_jax(str(cache))
    assert second["hits"] == first["written"] and second["written"] == 0, (first, second)
    assert _entries(cache) == entries
    assert second["loss"] == first["loss"]  # the loaded programs compute what the compiled ones did


@pytest.mark.slow
@needs_jax
def test_off_writes_nothing_even_where_jax_is_told_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "jax-env"
    result, _ = _run_jax("off", JAX_COMPILATION_CACHE_DIR=str(folder))
    assert result["description"] == "off"
    assert result["hits"] == 0 and result["written"] == 0
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.slow
@needs_jax
def test_processes_that_start_together_share_the_folder(tmp_path: Path) -> None:
    cache = tmp_path / "xla"
    together = [_start_jax(str(cache)) for _ in range(2)]
    results = [_result(p) for p in together]
    assert all(r["loss"] == results[0][0]["loss"] for r, _ in results)
    entries = _entries(cache)
    assert entries
    later, err = _run_jax(str(cache))
    assert later["hits"] == len(entries) and later["written"] == 0, (results, later)
    assert "Error reading persistent compilation cache" not in err


@pytest.mark.slow
@needs_jax
def test_a_torn_entry_costs_a_warning_and_a_compile_not_the_run(tmp_path: Path) -> None:
    """What a reader sees while another process writes the entry, or after a writer was killed."""
    cache = tmp_path / "xla"
    first, _ = _run_jax(str(cache))
    for entry in _entries(cache):
        data = entry.read_bytes()
        entry.write_bytes(data[: len(data) // 2])
    again, err = _run_jax(str(cache))
    assert again["hits"] == 0 and again["loss"] == first["loss"]
    assert "Error reading persistent compilation cache entry" in err


TF_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from worker.compile_cache import enable_compile_cache

    print(enable_compile_cache(Path(sys.argv[1])))
    import keras, numpy as np, tensorflow as tf

    tf.config.list_physical_devices()  # as describe_device does, before anything compiles
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    model = keras.Sequential(layers)
    # Keras compiles with XLA only on a GPU; ask for it here to see the cache work on CPU.
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    print(model.fit(np.ones((4, 8)), np.zeros((4, 2)), epochs=1, verbose=0).history["loss"][0])
    """
)


@pytest.mark.slow
def test_tensorflow_loads_what_an_earlier_process_compiled_with_xla(tmp_path: Path) -> None:
    cache = tmp_path / "xla"
    env = _env("tensorflow", TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=1")
    env.pop("TF_XLA_FLAGS", None)
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", TF_SCRIPT, str(cache)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(proc)
    description, loss = runs[0].stdout.strip().splitlines()[-2:]
    (tf_dir,) = cache.glob("tensorflow-*")
    assert description.startswith(f"tensorflow XLA cache at {tf_dir}")
    entries = sorted(tf_dir.glob("*.pb"))
    assert entries
    assert "Loading cached entry" not in runs[0].stderr and "Loading cached entry" in runs[1].stderr
    assert sorted(tf_dir.glob("*.pb")) == entries
    assert runs[1].stdout.strip().splitlines()[-1] == loss


def test_a_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "xla"
    shared.mkdir()
    shared.chmod(0o777)
    assert unsafe_reason(shared) == f"{shared} is writable by other users"
    assert enable_compile_cache(shared) == f"off: {shared} is writable by other users"
    shared.chmod(0o700)
    assert unsafe_reason(shared) is None


def test_the_runs_environment_records_what_the_cache_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.attempt import _device_and_environment
    from worker.device import describe_environment

    assert describe_environment("off")["compile_cache"] == "off"
    monkeypatch.setenv("TF_XLA_FLAGS", "")  # restored after the test: the flag it gets is for this test
    for on in (True, False):
        settings = Settings(home=tmp_path / str(on), compile_cache=on)
        _, environment = _device_and_environment(RunKind.TRAIN, settings)
        expected = enable_compile_cache(settings.compile_cache_dir)  # idempotent: says the same again
        assert environment["compile_cache"] == expected
        assert (expected == "off") is (not on)
        assert (tmp_path / str(on) / "cache" / "xla").is_dir() is on
        monkeypatch.setenv("TF_XLA_FLAGS", "")


def test_each_sections_provenance_says_what_the_cache_did() -> None:
    from types import SimpleNamespace

    from report.data import RunInfo
    from report.provenance import NOT_RECORDED, provenance

    def run(run_id: str, environment: dict[str, str]) -> RunInfo:
        return RunInfo(
            id=run_id, kind="train", label="", status="succeeded", seed=0, spec={}, spec_hash="h",
            source_id=run_id, environment=environment, device="CPU", worker=None, started_at=None,
            finished_at=None, error=None, total_epochs=1, last_epoch=1,
        )  # fmt: skip

    sweep = SimpleNamespace(id="s", overrides={}, created_at=None, profile="quick", code_version=None)
    data = SimpleNamespace(sweep=sweep)
    runs = [run("a", {"compile_cache": "off"}), run("b", {"compile_cache": "jax persistent cache at /x"})]
    assert dict(provenance(data, runs).items)["compile cache"] == "jax persistent cache at /x, off"  # type: ignore[arg-type]
    assert dict(provenance(data, [run("c", {})]).items)["compile cache"] == NOT_RECORDED  # type: ignore[arg-type]
