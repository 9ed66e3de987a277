"""Turning a plan into a sweep: validate, write every row in one transaction, then send what is ready.

Order matters for "nothing half-written": all input is validated and both services are checked before
the first row is written; rows are committed together; only then are messages sent. A message that fails
to go out after the commit is not lost: the run stays unsent and any worker's reaper sends it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.errors import OrchestratorError, UserError
from orchestrator.plans import Plan, report_run
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.config import Settings
from storage.models import Run, RunKind, RunStatus
from worker.specs import BUILTIN_IMAGES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def default_photo() -> Path:
    """A real photo that ships with matplotlib, so `submit all` needs no argument at all."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


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


def stage_image(store: ArtifactStore, path: Path) -> str:
    """Copy the photo into the artifact store under its checksum, so every worker can read it and two
    submissions of the same photo share one identity (and can reuse each other's results)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    relpath = f"inputs/{digest[:16]}{path.suffix.lower() or '.img'}"
    target = store.absolute(relpath)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    return "artifact:" + relpath


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
    force: bool,
    max_attempts: int,
) -> Submitted:
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
        identity = planned.identity(code_version, tuple(hashes[k] for k in planned.depends_on))
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
            reused_run_id=(earlier.reused_run_id or earlier.id) if earlier else None,
        )
        if earlier:
            reused.append(run.id)
        run_ids[planned.key] = run.id
    return Submitted(sweep_id=sweep.id, run_ids=run_ids, reused=tuple(reused))


def profile_values(profile: str, assignments: tuple[str, ...]) -> tuple[dict[str, object], dict[str, str]]:
    from worker.profiles import parse_assignments, resolve_profile

    overrides = parse_assignments(list(assignments))
    return resolve_profile(profile, overrides), overrides


def _stage_photos(store: ArtifactStore, plan: Plan) -> Plan:
    """Replace every photo path in visualization specs by its staged copy in the artifact store."""
    staged: dict[str, str] = {}
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
            run = replace(run, spec=dict(run.spec, image=staged[image]))
        runs.append(run)
    return replace(plan, runs=tuple(runs))


def submit_plan(
    settings: Settings,
    open_db: Callable[[], Any],
    plan: Plan,
    *,
    profile: str,
    overrides: dict[str, str],
    force: bool,
    wait: bool | None,
) -> Submitted:
    """Validate services, write the sweep, send what is ready, and (optionally) follow it to the end."""
    from rich.console import Console

    from orchestrator.services import check_broker
    from storage.version import code_version
    from worker.dispatch import dispatch_ready

    console = Console(stderr=False)
    db = open_db()  # exit 1 with the URL if the database is unreachable; nothing written yet
    app = check_broker(settings)  # likewise for the broker
    plan = _stage_photos(ArtifactStore(settings.artifacts_dir), plan)
    with db.session() as s:
        submitted = create_sweep(
            s,
            plan,
            profile_name=profile,
            overrides=overrides,
            code_version=code_version(),
            force=force,
            max_attempts=settings.max_attempts,
        )
    console.print(f"sweep {submitted.sweep_id}", highlight=False)
    if submitted.reused:
        console.print(
            f"{len(submitted.reused)} run(s) reuse identical earlier runs (cached); --force reruns them"
        )
    dispatch_ready(app, db)
    if wait is None:
        wait = settings.embedded_broker
    if not wait:
        hint = "start a worker with `orchestrator worker`; " if settings.embedded_broker else ""
        console.print(f"{hint}follow it with `orchestrator status {submitted.sweep_id} --watch`")
        return submitted
    _follow(settings, db, submitted, console)
    return submitted


def _follow(settings: Settings, db: Any, submitted: Submitted, console: Any) -> None:
    from orchestrator import monitor
    from orchestrator.local_worker import LocalWorker

    local = LocalWorker(settings) if settings.embedded_broker else None
    if local:
        console.print(f"started local worker {local.name} (log: {local.log_path})", highlight=False)

    def finished(rows: list[monitor.RunRow]) -> bool:
        return monitor.all_finished(rows) or (local is not None and not local.alive())

    try:
        rows = monitor.watch(db, submitted.sweep_id, console, until=finished)
    finally:
        if local:
            local.stop()
    if local and not monitor.all_finished(rows):
        raise OrchestratorError(f"the local worker exited early; see {local.log_path}")
    failed = [r for r in rows if r.status in ("failed", "cancelled")]
    with db.session(readonly=True) as s:
        report_html = repo.sweep_report_html(s, submitted.sweep_id)
    if report_html:
        console.print(f"report: {settings.artifacts_dir / report_html}", highlight=False)
    if failed:
        for r in failed:
            console.print(f"{r.id} {r.kind} {r.label} {r.status}: {r.error or ''}", highlight=False)
        raise OrchestratorError(f"sweep {submitted.sweep_id}: {len(failed)} run(s) did not succeed")
