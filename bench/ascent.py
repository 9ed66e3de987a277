"""Gradient ascent: the step-by-step Python loop vs the compiled loop (one call for all steps), per backend.

    python bench/ascent.py [--steps 50] [--size 128] [--layer conv_pw_13] [--rounds 3] \
        [--backends tensorflow jax] [--weights-dir ../shared/data/weights]

One MobileNet base (alpha 0.25; ImageNet weights from ``--weights-dir``, else random init, whose deep
layers have an all-zero input gradient, so the image does not move; a step costs the same either way) per
backend, each in its own process (Keras fixes the backend at import). Both paths are first called once (the
trace/compile, reported separately), then timed alternately ``--rounds`` times so that load from other
processes hits both alike; the median of each is reported, with the ratio and how far the two final
images are apart, next to the distance the ascent moved the image. Each compiled step agrees with the
step-by-step one to float32 rounding, but over many steps from trained weights the ascent can amplify that
rounding (ReLU6 kinks): measured on JAX at 128x128, conv_pw_13, the trajectories stay ~3e-5 apart for 18
steps and then part, so after 50 steps the images can differ visibly while the TensorFlow ones stay ~1e-5
apart. Either image is an equally valid ascent; tests/unit/experiments/test_gradients.py compares 5 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _child(args: argparse.Namespace) -> None:
    import keras
    import numpy as np

    from worker.experiments.gradients import ascend, ascend_stepwise
    from worker.experiments.images import make_input_image
    from worker.experiments.models import build_base
    from worker.experiments.visualize import _feature_model, preprocess

    weights = "imagenet" if args.weights_dir else "none"
    base = build_base(alpha=0.25, input_size=args.size, weights=weights, weights_dir=args.weights_dir)
    feature_model = _feature_model(base, args.layer)
    start = preprocess(make_input_image("random", args.size, 0))
    paths = {"stepwise": ascend_stepwise, "compiled": ascend}
    first: dict[str, float] = {}
    finals = {}
    for name, fn in paths.items():
        t0 = time.perf_counter()
        finals[name], _ = fn(feature_model, start, args.steps, 10.0)
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn(feature_model, start, args.steps, 10.0)
            times[name].append(time.perf_counter() - t0)
    moved = float(np.linalg.norm((finals["stepwise"] - start).ravel()))
    off = float(np.linalg.norm((finals["compiled"] - finals["stepwise"]).ravel()))
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "first_call_s": first,
                "median_s": {name: statistics.median(t) for name, t in times.items()},
                "all_s": times,
                "moved": moved,
                "off": off,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--layer", default="conv_pw_13")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    weights = f"ImageNet weights from {args.weights_dir}" if args.weights_dir else "random init"
    print(f"{args.steps} ascent steps at {args.size}x{args.size}, alpha 0.25, {weights}, layer {args.layer}")
    for backend in args.backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        argv = [sys.executable, __file__, "--child", *sys.argv[1:]]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"{backend}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(lines[-1])
        step, comp = r["median_s"]["stepwise"], r["median_s"]["compiled"]
        print(
            f"{r['backend']:>10}: step-by-step {step:.3f} s, compiled {comp:.3f} s "
            f"(median of {args.rounds}), ratio {step / comp:.2f}x; first call (trace/compile included) "
            f"{r['first_call_s']['stepwise']:.2f} s vs {r['first_call_s']['compiled']:.2f} s; "
            f"final images apart {r['off']:.2e} (moved {r['moved']:.2e})"
        )
        print(f"{'':>12}all runs: {json.dumps(r['all_s'])}")


if __name__ == "__main__":
    main()
