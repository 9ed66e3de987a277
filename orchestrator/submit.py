"""Turning a plan into a sweep: validate, write every row in one transaction, then send what is ready.

Order matters for "nothing half-written": all input is validated and both services are checked before
the first row is written; rows are committed together; only then are messages sent. A message that fails
to go out after the commit is not lost: the run stays unsent and any worker's reaper sends it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from contract.settings import Settings
from contract.specs import BUILTIN_IMAGES
from orchestrator import preflight
from orchestrator.errors import Interrupted, OrchestratorError, UserError
from orchestrator.monitor import make_console
from orchestrator.plans import Plan, report_run
from orchestrator.preflight import Work
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.models import Run, RunKind, RunStatus

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# The seed's Fig. 7 is a dog: a public-domain dog photo ships with the package (see assets/README.md).
DEFAULT_PHOTO = Path(__file__).resolve().parent / "assets" / "dog.jpg"


def default_photo() -> Path:
    """The photo `submit all` visualizes without --image, so it needs no argument at all."""
    return DEFAULT_PHOTO


def check_image(path: Path) -> None:
    """A missing or unreadable photo is a one-line error naming --image, before anything is written."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"--image: no such file: {path}")
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"--image: {path} is not a readable image ({exc.__class__.__name__})") from None


def stage_image(store: ArtifactStore, path: Path) -> tuple[str, str]:
    """Copy the photo into the artifact store under its checksum, so every worker can read it and two
    submissions of the same photo share one identity (and can reuse each other's results).

    Returns the spec reference (``artifact:inputs/...``) and the sha256 of the bytes staged (recorded
    in the spec, and verified by the worker before it reads the copy).
    """
    stored = store.stage_input(path)
    return "artifact:" + stored.path, stored.sha256


@dataclass(frozen=True)
class Submitted:
    sweep_id: str
    run_ids: dict[str, str]  # plan key -> run id
    reused: tuple[str, ...]  # run ids satisfied by earlier identical runs


def create_sweep(
    s: Session,
    plan: Plan,
    *,
    profile_name: str,
    overrides: dict[str, str],
    code_version: str,
    code_identity: str,
    force: bool,
    max_attempts: int,
) -> Submitted:
    """Write the sweep and its runs. ``code_version`` is the text the sweep records; ``code_identity``
    (the source hash) goes into every run's identity, so results of other code are never reused."""
    sweep = repo.create_sweep(
        s, plan=plan.name, profile=profile_name, overrides=overrides, code_version=code_version
    )
    run_ids: dict[str, str] = {}
    hashes: dict[str, str] = {}
    reused: list[str] = []
    runs = list(plan.runs)
    if plan.report:
        runs.append(report_run(sweep.id, tuple(r.key for r in plan.runs)))
    for planned in runs:
        identity = planned.identity(code_identity, tuple(hashes[k] for k in planned.depends_on))
        hashes[planned.key] = identity
        earlier: Run | None = None
        if planned.cacheable and not force:
            earlier = repo.find_succeeded_by_hash(s, identity)
        run = repo.create_run(
            s,
            sweep_id=sweep.id,
            kind=planned.kind,
            label=planned.label,
            spec=planned.spec,
            spec_hash=identity,
            seed=planned.seed,
            total_epochs=planned.total_epochs,
            max_attempts=max_attempts,
            depends_on=[run_ids[k] for k in planned.depends_on],
            status=RunStatus.SUCCEEDED if earlier else RunStatus.QUEUED,
            reused_run_id=earlier.results_run_id if earlier else None,
        )
        if earlier:
            reused.append(run.id)
        run_ids[planned.key] = run.id
    return Submitted(sweep_id=sweep.id, run_ids=run_ids, reused=tuple(reused))


def profile_values(profile: str, assignments: tuple[str, ...]) -> tuple[dict[str, object], dict[str, str]]:
    from contract.profiles import parse_assignments, resolve_profile

    overrides = parse_assignments(list(assignments))
    return resolve_profile(profile, overrides), overrides


def _stage_photos(store: ArtifactStore, plan: Plan) -> Plan:
    """Replace every photo path in visualization specs by its staged copy in the artifact store, and
    record the copy's sha256 (part of the run's identity) and the file's name (for captions only) in the
    spec."""
    staged: dict[str, tuple[str, str]] = {}
    runs = []
    for run in plan.runs:
        image = str(run.spec.get("image", ""))
        if (
            run.kind == RunKind.VISUALIZE
            and image not in BUILTIN_IMAGES
            and not image.startswith("artifact:")
        ):
            if image not in staged:
                staged[image] = stage_image(store, Path(image))
            reference, sha256 = staged[image]
            spec = dict(run.spec, image=reference, image_sha256=sha256, image_name=Path(image).name)
            run = replace(run, spec=spec)
        runs.append(run)
    return replace(plan, runs=tuple(runs))


def runs_to_execute(s: Session, plan: Plan, *, code_identity: str, force: bool) -> list[Work]:
    """The planned runs that will really execute: not satisfied by an identical earlier run, as
    :func:`create_sweep` will decide (the sweep's report, made later, is not among them)."""
    hashes: dict[str, str] = {}
    work: list[Work] = []
    for planned in plan.runs:
        identity = planned.identity(code_identity, tuple(hashes[k] for k in planned.depends_on))
        hashes[planned.key] = identity
        if force or not planned.cacheable or repo.find_succeeded_by_hash(s, identity) is None:
            work.append((planned.kind, planned.spec, planned.label))
    return work


def alternative_plans(profile: str, build: Callable[[dict[str, object]], Plan]) -> dict[str, Plan]:
    """The same plan under each other profile (without --set overrides), to compare durations."""
    from contract.profiles import PROFILES, resolve_profile

    return {name: build(resolve_profile(name)) for name in PROFILES if name != profile}


def submit_plan(
    settings: Settings,
    open_db: Callable[[], Any],
    plan: Plan,
    *,
    profile: str,
    overrides: dict[str, str],
    force: bool,
    wait: bool | None,
    alternatives: dict[str, Plan] | None = None,
) -> Submitted:
    """Check services and inputs, write the sweep, send what is ready, and (optionally) follow it."""
    from contract.version import code_identity, code_version
    from orchestrator.services import check_broker
    from worker.dispatch import dispatch_ready

    console = make_console()
    db = open_db()  # exit 1 with the URL if the database is unreachable; nothing written yet
    app = check_broker(settings)  # likewise for the broker
    version, identity = code_version(), code_identity()
    with db.session(readonly=True) as s:
        work = runs_to_execute(s, plan, code_identity=identity, force=force)
    if settings.embedded_broker:
        # The local worker reads this process's settings: what fails for it would fail in the task.
        preflight.check_local_run(settings, work)
    _say_estimate(settings, db, work, alternatives or {})
    plan = _stage_photos(ArtifactStore(settings.artifacts_dir), plan)
    with db.session() as s:
        submitted = create_sweep(
            s,
            plan,
            profile_name=profile,
            overrides=overrides,
            code_version=version,
            code_identity=identity,
            force=force,
            max_attempts=settings.max_attempts,
        )
    console.print(f"sweep {submitted.sweep_id}", highlight=False)
    if submitted.reused:
        console.print(
            f"{len(submitted.reused)} run(s) reuse identical earlier runs (cached); --force reruns them"
        )
    try:
        dispatch_ready(app, db)
        if wait is None:
            wait = settings.embedded_broker
        if not wait:
            console.print(next_step_hint(settings, db, submitted.sweep_id), highlight=False)
            return submitted
        follow_to_end(settings, db, submitted.sweep_id, console)
    except KeyboardInterrupt:
        raise Interrupted(interrupt(settings, db, submitted.sweep_id, None)) from None
    return submitted


def _say_estimate(settings: Settings, db: Database, work: list[Work], alternatives: dict[str, Plan]) -> None:
    """Before a long plan starts: how long, from what rate, and which profiles are faster."""
    from orchestrator import estimate
    from orchestrator.services import live_worker_devices

    if settings.embedded_broker:
        device: estimate.Device | None = estimate.local_device()
    else:
        device = estimate.remote_device(live_worker_devices(settings, db))
    if device is None:
        return
    others = {name: [(r.kind, r.spec, r.label) for r in alt.runs] for name, alt in alternatives.items()}
    with db.session(readonly=True) as s:
        lines = estimate.warning_lines(s, work, device, others)
    for line in lines:
        click.echo(line, err=True)


def next_step_hint(settings: Settings, db: Database, sweep_id: str) -> str:
    """What to run so that queued work gets done, and how to follow it."""
    from orchestrator.services import live_worker_devices

    follow = f"`orchestrator status {sweep_id} --watch`"
    if live_worker_devices(settings, db):
        return f"follow it with {follow}"
    return (
        f"no worker is running, so nothing will start: run `orchestrator worker` (in another terminal; "
        f"it runs every queued run), then follow with {follow}"
    )


def follow_to_end(settings: Settings, db: Database, sweep_id: str, console: Any) -> None:
    """Follow a sweep until every run has ended, with a local worker on the embedded broker; then the
    report's path and the runs that did not succeed. Ctrl-C: see :func:`interrupt`."""
    from orchestrator import monitor
    from orchestrator.local_worker import LocalWorker

    local = None
    restore = _hang_up_like_ctrl_c()
    try:
        if settings.embedded_broker:
            local = LocalWorker(preflight.absolute_inputs(settings))
            console.print(f"started local worker {local.name} (log: {local.log_path})", highlight=False)

        def finished(rows: list[monitor.RunRow]) -> bool:
            return monitor.all_finished(rows) or (local is not None and not local.alive())

        rows = monitor.watch(db, sweep_id, console, until=finished)
    except KeyboardInterrupt:
        raise Interrupted(interrupt(settings, db, sweep_id, local)) from None
    except BaseException:
        if local:
            local.stop()
        raise
    finally:
        restore()
    if local:
        local.stop()
    if local and not monitor.all_finished(rows):
        raise OrchestratorError(f"the local worker exited early; see {local.log_path}")
    failed = [r for r in rows if r.status in ("failed", "cancelled")]
    report_dir = settings.artifacts_dir / ArtifactStore.sweep_report_dir(sweep_id)
    if (report_dir / "report.html").exists():
        console.print(f"report: {report_dir / 'report.html'}", highlight=False)
    if failed:
        for r in failed:
            console.print(f"{r.id} {r.kind} {r.label} {r.status}: {r.error or ''}", highlight=False)
        raise OrchestratorError(f"sweep {sweep_id}: {len(failed)} run(s) did not succeed")


def _hang_up_like_ctrl_c() -> Callable[[], None]:
    """While following: a closed terminal (SIGHUP) or a plain ``kill`` (SIGTERM) cleans up as Ctrl-C
    does, instead of leaving the local worker running with nobody following it. Returns the undo."""

    def as_ctrl_c(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, as_ctrl_c) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def interrupt(settings: Settings, db: Database, sweep_id: str, local: Any) -> str:
    """Ctrl-C while following a sweep. What it means depends on who runs the work:

    - the embedded broker: the work is this machine's, so the sweep stops. The local worker is killed at
      once (its whole process group: a training in the middle of an epoch loses that epoch, never its
      checkpoint), its runs are handed back, and every run of the sweep that has not ended is cancelled,
      so that no later worker starts them behind the user's back. ``retry SWEEP`` resumes them, each
      training from its last checkpoint.
    - a shared broker: other machines do the work; only the following stops.

    A second Ctrl-C (or SIGTERM, SIGHUP) during this clean-up is ignored: cut short, it would leave runs
    marked running.
    """
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stopping}
    try:
        if not settings.embedded_broker:
            return (
                f"stopped following; sweep {sweep_id} goes on on its workers: `orchestrator status "
                f"{sweep_id} --watch` follows it, `orchestrator cancel {sweep_id}` stops it"
            )
        lines = []
        released: list[str] = []
        if local is not None:
            local.kill()
            with db.session() as s:
                released = repo.release_worker_runs(s, local.name)
                repo.stop_worker(s, local.name)
            lines.append(f"interrupted: stopped the local worker {local.name}")
        else:
            lines.append("interrupted")
        with db.session() as s:
            mine = {r.id for r in repo.sweep_runs(s, sweep_id)}
            for run_id in released:
                if run_id not in mine:
                    lines.append(f"{run_id}: handed back to the queue (it belongs to another sweep)")
            lines.extend(_cancel_unfinished(s, sweep_id, settings.lease_seconds))
        lines.append(
            f"resume with `orchestrator retry {sweep_id}` (trainings go on from their last checkpoint)"
        )
        return "\n".join(lines)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cancel_unfinished(s: Session, sweep_id: str, lease_seconds: float) -> list[str]:
    from orchestrator.runs import describe

    lines = []
    for run in repo.sweep_runs(s, sweep_id):
        if run.status.is_terminal:
            continue
        what = describe(run)
        if repo.request_cancel(s, run.id, lease_seconds=lease_seconds) == RunStatus.CANCELLED:
            at = f" at epoch {run.last_epoch}/{run.total_epochs}, checkpoint kept" if run.last_epoch else ""
            lines.append(f"{what}: cancelled{at}")
        else:
            lines.append(f"{what}: running on another worker; it will stop at the end of its current epoch")
    return lines
