"""Helpers of bench/gpu_plan.sh: wait for a sweep, keep its runs' records, and summarize a phase.

    python bench/gpu_plan.py wait SWEEP_ID OUTDIR [--timeout S]   # poll `orchestrator status`, dump JSON
    python bench/gpu_plan.py summary OUTDIR [--paper-images 50000] # per-run table + projected paper plan

Everything comes from `orchestrator status --json` (the database), so what is summarized is what the
runs recorded: per-epoch seconds and images/s, the device each run ran on.

The projection for the seed's paper plan (60 + 60 + 20+40 epochs of 50,000 images, three trainings at
once on one GPU, as `--slots 3` runs them) uses, per regime, the first epoch's measured seconds (process
start, imports, data, compile, one epoch) plus the remaining epochs at the run's median steady rate
(epochs 2 and later) for every image after the first epoch's; the plan's wall is the slowest
training plus the measured time of what follows the trainings (visualizations, report).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}
PAPER_EPOCHS = {"scratch": 60, "imagenet": 60, "finetune": 60}


def _status(target: str) -> dict[str, Any]:
    out = subprocess.run(
        ["orchestrator", "status", target, "--json"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def wait(sweep_id: str, outdir: Path, timeout: float) -> int:
    """Poll until every run of the sweep is terminal; write sweep.json and one RUN.json per run."""
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    while True:
        sweep = _status(sweep_id)
        states = [run["status"] for run in sweep["runs"]]
        if all(state in TERMINAL for state in states):
            break
        if time.monotonic() - started > timeout:
            print(f"wait: {sweep_id} not done after {timeout:.0f} s: {states}", file=sys.stderr)
            break
        time.sleep(2)
    sweep["waited_seconds"] = round(time.monotonic() - started, 1)
    (outdir / "sweep.json").write_text(json.dumps(sweep, indent=1))
    for run in sweep["runs"]:
        (outdir / f"{run['id']}.json").write_text(json.dumps(_status(run["id"]), indent=1))
    return 0 if all(state == "succeeded" for state in states) else 1


def _train_rows(outdir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(outdir.glob("r-*.json")):
        run = json.loads(path.read_text())
        if run["kind"] != "train" or not run.get("history"):
            continue
        history = run["history"]
        later = history[1:]
        steady = [e["images_per_second"] for e in later] or [history[0]["images_per_second"]]
        rows.append(
            {
                "label": run.get("label") or run.get("regime"),
                "regime": run.get("regime"),
                "alpha": run["spec"].get("alpha"),
                "device": run.get("device"),
                "epochs": len(history),
                "first_epoch_s": history[0]["seconds"],
                "later_epoch_s": statistics.median(e["seconds"] for e in later) if later else None,
                "steady_ips": statistics.median(steady),
                "train_s": sum(e["seconds"] for e in history),
                "subset_images": run["spec"].get("train_limit") or 50_000,
                "status": run["status"],
            }
        )
    return rows


def summary(outdir: Path, paper_images: int) -> dict[str, Any]:
    sweep = json.loads((outdir / "sweep.json").read_text())
    rows = _train_rows(outdir)
    wall = sweep["waited_seconds"]
    print(f"{outdir.name}: {len(sweep['runs'])} runs, waited {wall:.0f} s")
    print(f"  {'run':<12} {'alpha':>5} {'epochs':>6} {'1st epoch s':>11} {'later s':>8} {'img/s':>8}  device")
    for r in rows:
        later = f"{r['later_epoch_s']:.1f}" if r["later_epoch_s"] is not None else "-"
        print(
            f"  {r['label']:<12} {r['alpha']:>5} {r['epochs']:>6} {r['first_epoch_s']:>11.1f} {later:>8} "
            f"{r['steady_ips']:>8,.0f}  {r['device']}"
        )
    result: dict[str, Any] = {"phase": outdir.name, "waited_s": wall, "runs": rows}
    regimes = {r["regime"]: r for r in rows if r["regime"] in PAPER_EPOCHS}
    if set(regimes) == set(PAPER_EPOCHS):
        per_run = {
            name: r["first_epoch_s"]
            + (PAPER_EPOCHS[name] * paper_images - r["subset_images"]) / r["steady_ips"]
            for name, r in regimes.items()
        }
        tail = max(0.0, wall - max(r["train_s"] for r in regimes.values()))
        projected = max(per_run.values()) + tail
        result["projected_paper_s"] = projected
        print(
            f"  projected paper plan ({paper_images:,} images, 3 at once): {projected / 60:.1f} min "
            f"(slowest training {max(per_run.values()) / 60:.1f} min + {tail:.0f} s after the trainings)"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wait")
    w.add_argument("sweep_id")
    w.add_argument("outdir", type=Path)
    w.add_argument("--timeout", type=float, default=600)
    s = sub.add_parser("summary")
    s.add_argument("outdir", type=Path)
    s.add_argument("--paper-images", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.command == "wait":
        return wait(args.sweep_id, args.outdir, args.timeout)
    result = summary(args.outdir, args.paper_images)
    (args.outdir / "summary.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
