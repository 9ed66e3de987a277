"""Turning a plan into a sweep: validate, write every row in one transaction, then send what is ready.

Order matters for "nothing half-written": all input is validated and both services are checked before
the first row is written; rows are committed together; only then are messages sent. A message that fails
to go out after the commit is not lost: the run stays unsent and any worker's reaper sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contract.settings import Settings
from contract.specs import BUILTIN_IMAGES
from orchestrator import preflight
from orchestrator.check import Problem
from orchestrator.errors import UserError
from orchestrator.plans import Plan, PlannedRun, report_run
from orchestrator.preflight import Work
from orchestrator.reuse import Action, Decision, decide, decide_run
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.models import Run, RunKind, RunStatus
from storage.stores import open_store

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# The seed's Fig. 7 is a dog: a public-domain dog photo ships with the package (see assets/README.md).
DEFAULT_PHOTO = Path(__file__).resolve().parent / "assets" / "dog.jpg"


def default_photo() -> Path:
    """The photo `submit all` visualizes without --image, so it needs no argument at all."""
    return DEFAULT_PHOTO


# Above this many pixels a photo is refused at submit: PIL's own decompression-bomb threshold
# (``Image.MAX_IMAGE_PIXELS``: 89.5 Mpx, about 270 MB decoded as RGB), far above any camera's photo and
# far above what a visualization needs (it resizes the photo to ``vis_input_size``, at most 512x512).
MAX_IMAGE_PIXELS = 89_478_485


def check_image(path: Path) -> None:
    """A missing, unreadable or oversized photo is a one-line error naming --image, before anything is
    written. Only the header is read (``Image.open`` decodes nothing): a small file that declares a
    huge image is refused by its declared size, not by decoding it."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"--image: no such file: {path}")
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS and raises above twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{width}x{height}")
                img.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"--image: {path} {_declared_size(path)}; at most {MAX_IMAGE_PIXELS / 1e6:.1f} Mpx "
            "are accepted (the visualization resizes it to vis_input_size anyway)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"--image: {path} is not a readable image ({exc.__class__.__name__})") from None


def _declared_size(path: Path) -> str:
    """What the header says, read with PIL's limit lifted (nothing is decoded)."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as img:
            width, height = img.size
        return f"declares {width}x{height} pixels ({width * height / 1e6:,.1f} Mpx)"
    except Exception:  # noqa: BLE001 - the size is only for the message
        return "declares too many pixels"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


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
    estimate: tuple[str, ...] = ()  # what to say before a long plan starts (empty for a short one)
    joined: tuple[str, ...] = ()  # run ids following an identical run that is queued or running
    damaged: tuple[Problem, ...] = ()  # earlier identical results not reused: they no longer verify


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
    store: ArtifactStore | None = None,
) -> Submitted:
    """Write the sweep and its runs. ``code_version`` is the text the sweep records; ``code_identity``
    (the source hash) goes into every run's identity, so results of other code are never reused.

    Each run is decided (:func:`orchestrator.reuse.decide_run`) against the database this transaction
    writes to; an executed run's insert that meets an identical live run committed meanwhile by another
    submit (the unique index) is rolled back to its savepoint and decided again: it joins that run.
    ``store`` verifies results before they are reused (None only in tests without files)."""
    sweep = repo.create_sweep(
        s, plan=plan.name, profile=profile_name, overrides=overrides, code_version=code_version
    )
    run_ids: dict[str, str] = {}
    hashes: dict[str, str] = {}
    reused: list[str] = []
    joined: list[str] = []
    damaged: list[Problem] = []
    runs = list(plan.runs)
    if plan.report:
        runs.append(report_run(sweep.id, tuple(r.key for r in plan.runs)))
    for planned in runs:
        identity = planned.identity(code_identity, tuple(hashes[k] for k in planned.depends_on))
        hashes[planned.key] = identity
        for _ in range(_INSERT_ROUNDS):
            decision = decide_run(s, store, planned, identity, force=force)
            try:
                with s.begin_nested():
                    run = _create_run(
                        s,
                        sweep.id,
                        planned,
                        decision,
                        [run_ids[k] for k in planned.depends_on],
                        max_attempts,
                        code_identity,
                    )
                break
            except IntegrityError:  # an identical run went live meanwhile (another submit): join it
                continue
        else:
            raise RuntimeError(f"{planned.key}: no stable decision after {_INSERT_ROUNDS} rounds")
        damaged += decision.damaged
        if decision.action == Action.REUSE:
            reused.append(run.id)
        elif decision.action == Action.JOIN:
            joined.append(run.id)
        run_ids[planned.key] = run.id
    return Submitted(
        sweep_id=sweep.id,
        run_ids=run_ids,
        reused=tuple(reused),
        joined=tuple(joined),
        damaged=tuple(damaged),
    )


# An insert fails only when another submit committed the same identity between the decision and the
# insert; the next decision sees that run. A few rounds cover a run that ends meanwhile too.
_INSERT_ROUNDS = 5


def _create_run(
    s: Session,
    sweep_id: str,
    planned: PlannedRun,
    decision: Decision,
    depends_on: list[str],
    max_attempts: int,
    code_identity: str,
) -> Run:
    status = RunStatus.SUCCEEDED if decision.action == Action.REUSE else RunStatus.QUEUED
    return repo.create_run(
        s,
        sweep_id=sweep_id,
        kind=planned.kind,
        label=planned.label,
        spec=planned.spec,
        spec_hash=decision.identity,
        seed=planned.seed,
        total_epochs=planned.total_epochs,
        max_attempts=max_attempts,
        depends_on=depends_on,
        status=status,
        reused_run_id=decision.source,
        code_identity=code_identity,
    )


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


def runs_to_execute(
    s: Session, store: ArtifactStore | None, plan: Plan, *, code_identity: str, force: bool
) -> list[Work]:
    """The planned runs that will really execute, as :func:`create_sweep` decides them (same function,
    same staged plan; the sweep's report, made later, is not among them)."""
    decisions = decide(s, store, plan.runs, code_identity=code_identity, force=force)
    return [
        (planned.kind, planned.spec, planned.label)
        for planned in plan.runs
        if decisions[planned.key].action == Action.EXECUTE
    ]


def plan_work(
    db: Database, store: ArtifactStore, plan: Plan, *, code_identity: str, force: bool
) -> tuple[Plan, list[Work]]:
    """The plan with its photos staged, and the runs of it that will execute (for preflight and the
    estimate). Staging comes first (content-addressed files, no rows), so that this decision and
    :func:`create_sweep`'s see the same photo, named by its content."""
    plan = _stage_photos(store, plan)
    with db.session(readonly=True) as s:
        return plan, runs_to_execute(s, store, plan, code_identity=code_identity, force=force)


def alternative_plans(profile: str, build: Callable[[dict[str, object]], Plan]) -> dict[str, Plan]:
    """The same plan under each other profile (without --set overrides), to compare durations."""
    from contract.profiles import PROFILES, resolve_profile

    return {name: build(resolve_profile(name)) for name in PROFILES if name != profile}


def submit_plan(
    settings: Settings,
    open_db: Callable[[], Database],
    plan: Plan,
    *,
    profile: str,
    overrides: dict[str, str],
    force: bool,
    alternatives: dict[str, Plan] | None = None,
) -> Submitted:
    """Check services and inputs, write the sweep, send what is ready. Prints nothing: the caller says
    what happened (``Submitted`` holds the sweep, what was reused and the duration estimate)."""
    from contract.version import code_identity, code_version
    from orchestrator.services import check_broker
    from worker.dispatch import dispatch_ready

    db = open_db()  # exit 1 with the URL if the database is unreachable; nothing written yet
    app = check_broker(settings)  # likewise for the broker
    version, identity = code_version(), code_identity()
    store = open_store(settings)
    store.check_access()  # likewise for the artifact store, where the photos are staged
    plan, work = plan_work(db, store, plan, code_identity=identity, force=force)
    if settings.embedded_broker:
        # The local worker reads this process's settings: what fails for it would fail in the task.
        preflight.check_local_run(settings, work)
    estimate = _estimate(settings, db, work, alternatives or {})
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
            store=store,
        )
    dispatch_ready(app, db)
    return replace(submitted, estimate=estimate)


def _estimate(
    settings: Settings, db: Database, work: list[Work], alternatives: dict[str, Plan]
) -> tuple[str, ...]:
    """For a long plan: how long, from what rate, and which profiles are faster (else nothing)."""
    from orchestrator import estimate
    from orchestrator.services import live_worker_devices

    if settings.embedded_broker:
        device: estimate.Device | None = estimate.local_device()
    else:
        device = estimate.remote_device(live_worker_devices(settings, db))
    if device is None:
        return ()
    others = {name: [(r.kind, r.spec, r.label) for r in alt.runs] for name, alt in alternatives.items()}
    with db.session(readonly=True) as s:
        return tuple(estimate.warning_lines(s, work, device, others))
