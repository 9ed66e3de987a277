"""Where a task's time goes, per task kind, for a cold worker (empty caches) and a warm one.

    PYTHONPATH=$PWD python bench/task_overhead.py [--profile smoke] [--epochs 2] [--no-real]
        [--parallel] [--parallel-set train_limit=4000]

Uses ../shared/data (the CIFAR-10 tarball and the alpha-0.25 ImageNet weights), as bench/overhead.py does.
Two sources, in one invocation:

1. The real path. A real ``orchestrator worker`` (embedded broker and SQLite under a fresh
   ``$CONVLAB_HOME``; one slot, so one task at a time) runs ``submit all --profile <profile>`` twice: cold
   (empty compilation cache, no decoded CIFAR-10 cache) and warm (``--force``, same worker, same home: both
   caches filled by the first). Per run, from the database (the claim clears ``received_at``, so): the
   previous run's ``finished_at`` to this one's claim, ``started_at`` (the old task process exits, what
   became ready is sent, the broker delivers it, a new process connects and claims), the claim to the
   first epoch's commit less that epoch's own seconds (imports, data, model, checkpoint save and commit),
   the epochs, the last commit to ``finished_at``, and the claim to ``finished_at``. Celery's own
   "succeeded in" time per task comes from the worker log.
2. The parts. Fresh subprocesses, cold (a fresh home) then warm (the same home), call the engine's own
   functions the way ``worker/runners.py`` does: ``enable_compile_cache`` (which imports Keras and
   TensorFlow), ``load_cifar10`` with the decoded cache, ``regimes.train`` for the profile's ``imagenet``
   training with ``epochs`` set (its ``build_model``, ``_compile``, ``save_checkpoint`` and ``prune``
   timed by wrapping them in place), then ``visualize`` of the training's checkpoint, then the report of
   the real path's sweep. The process start (interpreter and ``site``) and its end (interpreter teardown,
   TensorFlow's included) are measured from outside. The database writes of a task (claim, epoch commit,
   finish) are not in these: the real path's rows hold them.

``--parallel``: two trainings at once against one alone (fresh processes, warm caches, the profile with
``--parallel-set`` applied), for the 1-vs-2-slots question on this machine.

Timings only, no assertions; the machine should be otherwise quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# ../shared/data beside the checkout (/work/main), or one level up from a worktree (/work/wt/<name>).
_PLACES = (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
DATA = next((p for p in _PLACES if p.is_dir()), _PLACES[0])
TERMINAL = ("succeeded", "failed", "cancelled")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env.update(
        CONVLAB_HOME=str(home),
        CONVLAB_CIFAR10=str(DATA / "cifar-10-python.tar.gz"),
        CONVLAB_WEIGHTS_DIR=str(DATA / "weights"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


# --- the parts: one task-like process ------------------------------------------------------------------


class _Clock:
    """Seconds spent in wrapped functions, by name (a list: one entry per call)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}

    def wrap(self, module: Any, name: str, label: str | None = None) -> None:
        original = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.setdefault(label or name, []).append(time.perf_counter() - started)

        setattr(module, name, timed)

    def total(self, label: str) -> float:
        return sum(self.calls.get(label, []))


def _imports(kind: str) -> dict[str, float]:
    """What a task process imports before its work, as ``worker.attempt`` and the runner do."""
    from contract.settings import load_settings

    settings = load_settings()
    started = time.perf_counter()
    import keras  # noqa: F401 - TensorFlow comes with it

    keras_s = time.perf_counter() - started
    started = time.perf_counter()
    from worker.compile_cache import enable_compile_cache
    from worker.device import describe_device, describe_environment

    describe_environment(enable_compile_cache(settings.compile_cache_dir))
    describe_device()
    if kind == "train":
        import worker.experiments.regimes  # noqa: F401
    else:
        import worker.experiments.visualize  # noqa: F401
    return {"import keras+tf": keras_s, "import engine+device": time.perf_counter() - started}


def child_train(overrides: dict[str, str], out: Path) -> dict[str, Any]:
    """A training task's parts, the runner's calls in the runner's order (minus the database)."""
    phases = _imports("train")
    from contract.profiles import resolve_profile
    from contract.settings import load_settings
    from orchestrator.plans import train_spec
    from worker.experiments import regimes
    from worker.experiments.data import load_cifar10

    settings = load_settings()
    spec = train_spec(resolve_profile(overrides.pop("profile"), overrides), "imagenet", 0)
    started = time.perf_counter()
    data = load_cifar10(
        settings.cifar10_path,
        train_limit=spec.train_limit,
        val_limit=spec.val_limit,
        seed=spec.seed,
        cache_dir=settings.home / "cache",
    )
    phases["data (load + decode)"] = time.perf_counter() - started
    clock = _Clock()
    for name in ("build_model", "_compile", "save_checkpoint", "prune", "_seed"):
        clock.wrap(regimes, name)
    compiled_at: list[float] = []
    first_batch: dict[int, float] = {}
    epochs: list[float] = []
    wrapped_compile = regimes._compile

    def compile_and_note(*args: Any, **kwargs: Any) -> None:
        wrapped_compile(*args, **kwargs)
        compiled_at.append(time.perf_counter())

    regimes._compile = compile_and_note  # type: ignore[assignment]

    def on_progress(epoch: int, batches: int, images_per_second: float) -> None:
        first_batch.setdefault(epoch, time.perf_counter())

    started = time.perf_counter()
    result = regimes.train(
        spec,
        data,
        out / "checkpoint",
        weights_dir=settings.weights_dir,
        on_epoch=lambda record: epochs.append(record.seconds),
        on_progress=on_progress,
        loop=settings.train_loop,
    )
    in_train = time.perf_counter() - started
    phases["model build (weights)"] = clock.total("_seed") + clock.total("build_model")
    phases["compile (Keras)"] = clock.total("_compile")
    if compiled_at and 1 in first_batch:
        phases["first batch (adapter + trace)"] = first_batch[1] - compiled_at[0]
    phases["first epoch"] = epochs[0]
    if len(epochs) > 1:
        phases["steady epoch"] = statistics.mean(epochs[1:])
    phases["checkpoint save (per epoch)"] = clock.total("save_checkpoint") / len(epochs)
    known = sum(clock.total(n) for n in ("_seed", "build_model", "_compile", "save_checkpoint", "prune"))
    phases["rest of train()"] = in_train - known - sum(epochs)
    return {"phases": phases, "checkpoint": str(result.checkpoint_path), "epochs": len(epochs)}


def child_visualize(overrides: dict[str, str], checkpoint: str) -> dict[str, Any]:
    """A visualization task's parts: the runner's ``visualize`` of a training's checkpoint, then PNGs."""
    phases = _imports("visualize")
    from contract.profiles import resolve_profile
    from contract.settings import load_settings
    from orchestrator.plans import visualize_spec
    from worker.experiments import visualize
    from worker.runners import _png

    settings = load_settings()
    spec = visualize_spec(resolve_profile(overrides.pop("profile"), overrides), "random", 0)
    clock = _Clock()
    for name in ("_network", "_feature_model", "_ascent"):
        clock.wrap(visualize, name)
    result = visualize.visualize(spec, checkpoint=Path(checkpoint), weights_dir=settings.weights_dir)
    started = time.perf_counter()
    for picture in (result.input_image, *result.layers.values()):
        _png(picture)
    ascents = clock.calls["_ascent"]
    phases["model (load checkpoint)"] = clock.total("_network") + clock.total("_feature_model")
    phases["first layer's ascent (trace)"] = ascents[0]
    if len(ascents) > 1:
        phases["each further layer's ascent"] = statistics.mean(ascents[1:])
    phases["PNG outputs"] = time.perf_counter() - started
    return {"phases": phases, "layers": len(ascents)}


def child_report(sweep_id: str, out: Path) -> dict[str, Any]:
    """A report task's parts: imports, the database snapshot, the figures and pages."""
    from contract.settings import load_settings

    settings = load_settings()
    started = time.perf_counter()
    from report.build import render_report
    from report.data import load_report_data
    from storage.db import get_database
    from storage.stores import open_store

    phases = {"imports (report, storage)": time.perf_counter() - started}
    started = time.perf_counter()
    db = get_database(settings)
    with db.session(readonly=True) as s:
        data = load_report_data(s, open_store(settings), sweep_id)
    phases["database snapshot"] = time.perf_counter() - started
    started = time.perf_counter()
    render_report(data, out / "report")
    phases["figures + pages"] = time.perf_counter() - started
    return {"phases": phases}


def child(argv: list[str]) -> None:
    kind, arg = argv[0], argv[1]
    main_at = time.time()
    options = json.loads(arg)
    out = Path(options.pop("out"))
    if kind == "train":
        result = child_train(options, out)
    elif kind == "visualize":
        result = child_visualize(options, options.pop("checkpoint"))
    else:
        result = child_report(options["sweep"], out)
    result.update(main_at=main_at, end_at=time.time())
    print("RESULT " + json.dumps(result), flush=True)


def run_part(kind: str, home: Path, options: dict[str, Any]) -> dict[str, Any]:
    """One fresh task-like process; adds its start (exec to ``main``) and its end (work done to exit)."""
    out = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=home))
    arg = json.dumps({**options, "out": str(out)})
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, arg],
        env=_env(home), cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    exited = time.time()
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{kind} child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = dict(json.loads(line[len("RESULT ") :]))
    phases = {"process start (python)": result["main_at"] - spawned, **result["phases"]}
    phases["end (exit, teardown)"] = exited - result["end_at"]
    result["phases"] = phases
    result["total"] = exited - spawned
    return result


def parts(
    home: Path, profile: str, epochs: int, report: tuple[Path, str] | None
) -> dict[str, dict[str, Any]]:
    """A training, a visualization of its checkpoint, and (given the real path's home and sweep) a report."""
    train = run_part("train", home, {"profile": profile, "epochs": str(epochs)})
    found = {"train": train}
    found["visualize"] = run_part("visualize", home, {"profile": profile, "checkpoint": train["checkpoint"]})
    if report is not None:
        found["report"] = run_part("report", report[0], {"sweep": report[1]})
    return found


# --- the real path --------------------------------------------------------------------------------------


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


def submit_and_wait(env: dict[str, str], args: list[str]) -> tuple[str, float]:
    from contract.settings import load_settings
    from storage import repository as repo
    from storage.db import get_database

    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", *args, "--force", "--no-wait"],
        check=False, env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"submit {' '.join(args)} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    out = proc.stdout
    sweep_id = re.search(r"sweep (s-\w+)", out).group(1)  # type: ignore[union-attr]
    db = get_database(load_settings(env))
    while True:
        with db.session(readonly=True) as s:
            runs = repo.sweep_runs(s, sweep_id)
        if runs and all(r.status in TERMINAL for r in runs):
            break
        time.sleep(0.2)
    failed = [f"{r.id}: {r.error}" for r in runs if r.status != "succeeded"]
    if failed:
        raise SystemExit("real path: runs did not succeed: " + "; ".join(failed))
    return sweep_id, time.perf_counter() - started


def real_rows(env: dict[str, str], sweep_id: str) -> list[dict[str, Any]]:
    """Per run of the sweep, in the order they ran: where its time went, from its database rows."""
    from sqlalchemy import select

    from contract.settings import load_settings
    from storage.db import get_database
    from storage.models import Run

    db = get_database(load_settings(env))
    rows: list[dict[str, Any]] = []
    with db.session(readonly=True) as s:
        found = s.scalars(select(Run).where(Run.sweep_id == sweep_id))
        runs = sorted(found, key=lambda r: r.started_at.timestamp() if r.started_at else float("inf"))
        previous_end: datetime | None = None
        for run in runs:
            epochs = list(run.epochs)
            row: dict[str, Any] = {
                "run": f"{run.kind}/{run.label}" if run.label else f"{run.kind}",
                # The claim clears received_at and enqueued_at: the gap is from one run's end to the next
                # one's claim (the old process exits, the new one starts, connects, claims).
                "gap": _seconds(run.started_at, previous_end),
                "task": _seconds(run.finished_at, run.started_at),
                "cache": (run.environment or {}).get("compile_cache", ""),
            }
            if epochs:
                row["to_epoch1"] = (_seconds(epochs[0].recorded_at, run.started_at) or 0) - epochs[0].seconds
                row["epochs"] = [round(e.seconds, 1) for e in epochs]
                commits = [
                    (_seconds(b.recorded_at, a.recorded_at) or 0) - b.seconds
                    for a, b in zip(epochs, epochs[1:], strict=False)
                ]
                row["commit"] = statistics.mean(commits) if commits else None
                row["end"] = _seconds(run.finished_at, epochs[-1].recorded_at)
            rows.append(row)
            previous_end = run.finished_at
    return rows


def wait_ready(log: Path, timeout: float = 60.0) -> float | None:
    """Seconds until the worker logged Celery's "ready." line (None: not seen; submit anyway)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return time.perf_counter() - started
        time.sleep(0.1)
    return None


def real_path(home: Path, submit: list[str]) -> dict[str, Any]:
    env = _env(home)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "worker.log"
    log = open(log_path, "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "worker"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    found: dict[str, Any] = {}
    try:
        found["worker_ready"] = wait_ready(log_path)
        for label in ("cold", "warm"):
            sweep_id, wall = submit_and_wait(env, submit)
            found[label] = {"sweep": sweep_id, "wall": wall, "rows": real_rows(env, sweep_id)}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)
        log.close()
    found["celery"] = [float(x) for x in re.findall(r"succeeded in ([0-9.]+)s", log_path.read_text())]
    return found


# --- printing -------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_parts(cold: dict[str, dict[str, Any]], warm: dict[str, dict[str, Any]]) -> None:
    for kind in cold:
        print(f"\n## {kind}: parts (fresh process each, seconds)")
        print(f"| {'phase':<32} | cold | warm |")
        print(f"| {'-' * 32} | ---: | ---: |")
        for phase in cold[kind]["phases"]:
            c, w = cold[kind]["phases"][phase], warm[kind]["phases"].get(phase)
            print(f"| {phase:<32} | {c:4.1f} | {_fmt(w):>4} |")
        fixed = {
            label: got[kind]["total"]
            - got[kind].get("epochs", 0) * got[kind]["phases"].get("steady epoch", 0)
            for label, got in (("cold", cold), ("warm", warm))
        }
        print(f"| {'total (process wall)':<32} | {cold[kind]['total']:4.1f} | {warm[kind]['total']:4.1f} |")
        if kind == "train":
            print(
                f"| {'fixed (total - epochs x steady)':<32} | {fixed['cold']:4.1f} | {fixed['warm']:4.1f} |"
            )


def print_real(found: dict[str, Any], command: str) -> None:
    print(
        f"\n## real path: `{command}`, 1 slot (seconds; worker ready after {_fmt(found['worker_ready'])} s)"
    )
    for label in ("cold", "warm"):
        got = found[label]
        print(f"\n{label}: sweep {got['sweep']}, submit to all ended {got['wall']:.1f} s")
        print(
            "| run | prev end->claim | claim->epoch 1 less it "
            "| epochs | commit/epoch | last commit->end | claim->end |"
        )
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
        for r in got["rows"]:
            epochs = " ".join(f"{e:.1f}" for e in r.get("epochs", [])) or "-"
            print(
                f"| {r['run']} | {_fmt(r['gap'])} | {_fmt(r.get('to_epoch1'))} | "
                f"{epochs} | {_fmt(r.get('commit'))} | {_fmt(r.get('end'))} | {_fmt(r['task'])} |"
            )
        caches = sorted({r["cache"] for r in got["rows"] if r["cache"]})
        print(f"compile cache, as the runs recorded it: {'; '.join(caches) or '-'}")
    print(f"\nworker log, Celery's 'succeeded in' per task: {' '.join(f'{x:.1f}' for x in found['celery'])}")


def parallel(home: Path, overrides: dict[str, str], epochs: int) -> None:
    options = {"profile": overrides.pop("profile"), "epochs": str(epochs), **overrides}
    print(f"\n## 1 vs 2 trainings at once: {options}, warm caches (seconds)")
    alone = run_part("train", home, dict(options))
    started = time.perf_counter()
    pair = _two_at_once(home, options)
    both = time.perf_counter() - started
    steady = [p["phases"].get("steady epoch", p["phases"]["first epoch"]) for p in pair]
    print("| layout | wall | steady epoch | trainings/min |")
    print("| --- | ---: | ---: | ---: |")
    a = alone["phases"].get("steady epoch", alone["phases"]["first epoch"])
    print(f"| 1 at a time | {alone['total']:.1f} | {a:.1f} | {60 / alone['total']:.2f} |")
    print(f"| 2 at once | {both:.1f} | {statistics.mean(steady):.1f} | {120 / both:.2f} |")


def _two_at_once(home: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: run_part("train", home, dict(options)), range(2)))


def _state() -> str:
    load = os.getloadavg()
    loads = " ".join(f"{x:.2f}" for x in load)
    return f"{os.cpu_count()} CPUs, load {loads}, python {sys.version.split()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="smoke", help="profile of the plan and of the parts")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs of the parts' training (>= 2: a steady one)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real worker (parts only, no report)")
    parser.add_argument("--parallel", action="store_true", help="also time 1 vs 2 trainings at once")
    parser.add_argument("--parallel-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"machine: {_state()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="convlab-overhead-"))
    report: tuple[Path, str] | None = None
    if not args.no_real:
        found = real_path(tmp / "real", ["all", "--profile", args.profile])
        print_real(found, f"submit all --profile {args.profile}")
        report = (tmp / "real", found["warm"]["sweep"])  # the report's parts read the real sweep
    home = tmp / "parts"  # fresh: empty compilation cache, no decoded CIFAR-10
    home.mkdir()
    cold = parts(home, args.profile, args.epochs, report)
    warm = parts(home, args.profile, args.epochs, report)  # the same home: both caches filled
    print_parts(cold, warm)
    if args.parallel:
        overrides = dict(kv.split("=", 1) for kv in args.parallel_set)
        parallel(home, {"profile": args.profile, **overrides}, args.epochs)
    print(f"\nmachine after: {_state()}; files under {tmp}")


if __name__ == "__main__":
    main()
