"""The persistent compilation cache (worker/compile_cache.py): a task's first epoch, cold cache vs warm.

Each measurement is a fresh process, as each task is: Keras on JAX, the engine's model (MobileNet alpha
0.25 + Dense(10) at 32x32, no pretrained weights), Adam and categorical crossentropy, one epoch of batch
32 over random images; the time of that first ``fit`` (compiling included), and the time to build the
model before it (small compiled programs initialize its weights). Rounds alternate: a process with an
empty cache folder, then one with the folder the first left behind.

    PYTHONPATH=$PWD python bench/compile_cache.py [--rounds 2] [--images 320]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(cache_dir: str, images: int) -> None:
    """One task-like process: print a JSON line with the first epoch's seconds and the cache's events."""
    from worker.compile_cache import enable_compile_cache

    description = enable_compile_cache(Path(cache_dir) if cache_dir != "off" else None)

    import jax
    import keras
    import numpy as np

    from worker.experiments.models import build_model

    events: dict[str, int] = {}
    compiles: list[float] = []
    jax.monitoring.register_event_listener(lambda e, **_: events.__setitem__(e, events.get(e, 0) + 1))
    jax.monitoring.register_event_duration_secs_listener(
        lambda e, d, **_: compiles.append(d) if e == "/jax/core/compile/backend_compile_duration" else None
    )
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(images, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, size=images), 10)
    started = time.perf_counter()
    model = build_model(alpha=0.25, input_size=32, weights="none")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    built = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    seconds = time.perf_counter() - built
    print(
        json.dumps(
            {
                "first_epoch_s": round(seconds, 2),
                "build_s": round(built - started, 2),
                "cache": description,
                "hits": events.get("/jax/compilation_cache/cache_hits", 0),
                "written": events.get("/jax/compilation_cache/cache_misses", 0),
                "compiles": len(compiles),
                "compile_s": round(sum(compiles), 2),
                "compiles_over_0.1s": sum(d >= 0.1 for d in compiles),
                "compiles_over_1s": sum(d >= 1.0 for d in compiles),
            }
        )
    )


def run_child(cache_dir: str, images: int) -> dict[str, object]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", cache_dir, "--images", str(images)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images)
        return
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            folder = str(Path(tmp) / f"round{i}")
            for label, times in (("cold", cold), ("warm", warm)):
                result = run_child(folder, args.images)
                times.append(float(result["first_epoch_s"]))  # type: ignore[arg-type]
                entries = sum(1 for p in Path(folder).glob("*-cache"))
                print(f"round {i} {label}: {json.dumps(result)} entries={entries}", flush=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"first epoch, median of {args.rounds}: cold {c:.1f} s, warm {w:.1f} s, cold/warm {c / w:.2f}x")


if __name__ == "__main__":
    main()
