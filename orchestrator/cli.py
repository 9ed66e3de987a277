"""`orchestrator`: the command line. Each command parses, calls library functions, prints.

Never imports TensorFlow; Celery is imported only by the commands that talk to the broker.
Errors: bad input -> one line naming the option, exit 2, nothing written; unreachable services -> one
line naming the URL (password masked), exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from contract.profiles import PROFILES
from contract.settings import Settings, SettingsError, is_object_url, load_settings, mask_url
from contract.specs import REGIMES, ImageKind, image_kind
from contract.wording import counted
from orchestrator.errors import Interrupted, OrchestratorError, UserError

if TYPE_CHECKING:
    from orchestrator.plans import Plan
    from storage.db import Database

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    settings: Settings
    _db: Database | None = field(default=None)

    def db(self) -> Database:
        """The database, created at the latest migration on first use; exit 1 if unreachable."""
        if self._db is None:
            from storage.db import get_database

            db = get_database(self.settings)
            db.ensure_schema()
            self._db = db
        return self._db


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Map the library's exceptions to one-line messages and exit codes."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from contract.specs import SpecError
        from storage.errors import DatabaseUnavailable, IllegalTransition, NotFound, StorageError

        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:  # Ctrl-C: what was stopped and how to resume, not an error
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except (SpecError, SettingsError, NotFound, IllegalTransition) as exc:
            _fail(str(exc), 2)
        except DatabaseUnavailable as exc:
            _fail(str(exc), 1)
        except OrchestratorError as exc:
            _fail(str(exc), exc.exit_code)
        except StorageError as exc:
            _fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


class OneOf(click.Choice):  # type: ignore[type-arg]
    """A choice whose refusal reads like every other bad input: ``--profile: must be one of ...``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        self.fail(f"must be one of {', '.join(map(str, self.choices))}; got {value!r}", param, ctx)


class OneLineErrors(click.Group):
    """The top-level group: click's own usage errors (an unknown option, a missing argument, a value of
    the wrong type) become one line and exit 2, as bad input does everywhere else, instead of a usage
    block. ``--help`` and a bare ``orchestrator`` still print the help."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.MissingParameter as exc:
            _fail(" ".join(exc.format_message().split()), exc.exit_code)  # click lists choices on lines
        except click.BadParameter as exc:
            name = exc.param_hint or (exc.param.opts[0] if exc.param is not None and exc.param.opts else "")
            name = (name if isinstance(name, str) else " / ".join(name)).strip("'")  # click quotes it
            _fail(f"{name}: {exc.message}" if name else exc.message, exc.exit_code)
        except click.UsageError as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convlab", message="convlab %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """convlab: reproduce the MobileNet/CIFAR-10 lab report as Celery tasks.

    Start with `orchestrator submit all --profile quick`.
    """
    try:
        ctx.obj = CliContext(settings=load_settings())
    except SettingsError as exc:
        _fail(str(exc), 2)


pass_cli = click.make_pass_decorator(CliContext)


# ---------------------------------------------------------------- submit
@main.group()
def submit() -> None:
    """Submit the whole plan (`all`) or single runs."""


@dataclass(frozen=True)
class SubmitOptions:
    """What every ``submit`` command takes (see :func:`_common_submit_options`)."""

    profile: str
    assignments: tuple[str, ...]
    base_seed: int
    force: bool
    wait: bool | None


def _common_submit_options(fn: F) -> F:
    """The options every ``submit`` command takes, handed to it as one ``options: SubmitOptions``."""

    @wraps(fn)
    def with_options(
        *args: Any,
        profile: str,
        assignments: tuple[str, ...],
        base_seed: int,
        force: bool,
        wait: bool | None,
        **kwargs: Any,
    ) -> Any:
        return fn(*args, options=SubmitOptions(profile, assignments, base_seed, force, wait), **kwargs)

    options = [
        click.option(
            "--profile",
            type=OneOf(tuple(PROFILES)),
            default="paper",
            show_default=True,
            help="paper: the report's setup exactly (hours on a CPU, minutes on a GPU; the estimate is "
            "printed before a long plan starts); quick: minutes on a CPU; smoke: tests.",
        ),
        click.option(
            "--set",
            "assignments",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a profile value, e.g. --set epochs=10 (repeatable).",
        ),
        click.option(
            "--seed",
            "base_seed",
            default=0,
            show_default=True,
            type=click.IntRange(0, 2**31 - 1),  # a run's seed (contract.specs): refused as --seed, not seed
            help="Seed of the first repetition; repetitions use seed, seed+1, ...",
        ),
        click.option("--force", is_flag=True, help="Run even when an identical run already succeeded."),
        click.option(
            "--wait/--no-wait",
            default=None,
            help="Follow progress until done (default: wait on the embedded broker, not on Redis).",
        ),
    ]
    decorated: Any = with_options
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def _submit(
    cli: CliContext,
    options: SubmitOptions,
    build: Callable[[dict[str, object]], Plan],
    *,
    photos: Sequence[Path] = (),
    compare_profiles: bool = True,
) -> None:
    """Plan with the profile's values and the --set overrides, write and send the plan, say what
    happened, then follow it (or say how to). ``photos`` are checked readable before anything is
    written. ``compare_profiles``: estimate the same plan under the other profiles too, so that a long
    plan's warning can name a faster one."""
    from orchestrator import submit as flow

    settings = cli.settings
    values, overrides = flow.profile_values(options.profile, options.assignments)
    for photo in photos:
        flow.check_image(photo)
    plan = build(values)
    others = flow.alternative_plans(options.profile, build) if compare_profiles else None
    if settings.embedded_broker and settings.database_url_override is None and not settings.home.exists():
        # The first submit here: nothing can be reused yet, so every planned run will execute. What the
        # local worker needs is checked before the database and the broker create $CONVLAB_HOME, so a
        # refusal leaves nothing behind.
        from orchestrator import preflight

        preflight.check_local_run(settings, [(r.kind, r.spec, r.label) for r in plan.runs])
    submitted = flow.submit_plan(
        settings,
        cli.db,
        plan,
        profile=options.profile,
        overrides=overrides,
        force=options.force,
        alternatives=others,
    )
    for line in submitted.estimate:
        click.echo(line, err=True)
    click.echo(f"sweep {submitted.sweep_id}")
    if submitted.reused:
        click.echo(
            f"{len(submitted.reused)} run(s) reuse identical earlier runs (cached); --force reruns them"
        )
    if submitted.joined:
        click.echo(f"{len(submitted.joined)} run(s) join identical runs already queued or running")
    for problem in submitted.damaged:
        click.echo(f"not reused, damaged: {problem} (`orchestrator check --repair` marks it)", err=True)
    _follow_or_hint(settings, cli.db(), submitted.sweep_id, options.wait)


def _follow_or_hint(settings: Settings, db: Database, sweep_id: str, wait: bool | None) -> None:
    """Follow the sweep to its end (default on the embedded broker, with a local worker), or say what to
    run. Ctrl-C while following: see :func:`orchestrator.follow.interrupt`."""
    from orchestrator import follow
    from orchestrator.monitor import make_console

    if wait is None:
        wait = settings.embedded_broker
    if not wait:
        click.echo(follow.next_step_hint(settings, db, sweep_id))
        return
    try:
        follow.follow_to_end(settings, db, sweep_id, make_console())
    except KeyboardInterrupt:
        raise Interrupted(follow.interrupt(settings, db, sweep_id, None)) from None


@submit.command("all")
@_common_submit_options
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions of each training regime.")
@click.option(
    "--image",
    type=click.Path(path_type=Path),
    default=None,
    help="The natural photo to visualize (default: a dog, as in the seed's Fig. 7; shipped with convlab).",
)
@pass_cli
@handle_errors
def submit_all(
    cli: CliContext,
    options: SubmitOptions,
    seeds: int,
    image: Path | None,
) -> None:
    """The seed's whole plan: three trainings, three visualizations, one report."""
    from orchestrator import submit as flow
    from orchestrator.plans import plan_all

    photo = image or flow.default_photo()
    _submit(
        cli,
        options,
        lambda v: plan_all(v, seeds=seeds, base_seed=options.base_seed, photo=str(photo)),
        photos=[photo],
    )


@submit.command("explain")
@_common_submit_options
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions of each training.")
@pass_cli
@handle_errors
def submit_explain(
    cli: CliContext,
    options: SubmitOptions,
    seeds: int,
) -> None:
    """Beyond the seed: its three regimes beside controlled changes that answer its open questions
    (BatchNorm frozen when fine-tuning; inputs upscaled to explain_input_size; augmentation), and a report."""
    from orchestrator.plans import plan_explain

    _submit(cli, options, lambda v: plan_explain(v, seeds=seeds, base_seed=options.base_seed))


@submit.command("train")
@_common_submit_options
@click.option("--regime", required=True, type=OneOf(REGIMES), help="The training regime.")
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions.")
@pass_cli
@handle_errors
def submit_train(
    cli: CliContext,
    options: SubmitOptions,
    regime: str,
    seeds: int,
) -> None:
    """One training regime (x seeds)."""
    from orchestrator.plans import plan_train

    _submit(cli, options, lambda v: plan_train(v, regime=regime, seeds=seeds, base_seed=options.base_seed))


@submit.command("visualize")
@_common_submit_options
@click.option(
    "--image",
    "images",
    multiple=True,
    default=(ImageKind.RANDOM.value,),
    show_default=True,
    metavar="random|sine|PATH",
    help="A built-in image or a photo (repeatable).",
)
@click.option(
    "--source",
    type=OneOf(("imagenet", "none")),
    default="imagenet",
    show_default=True,
    help="Network weights: ImageNet's, or random (none).",
)
@pass_cli
@handle_errors
def submit_visualize(
    cli: CliContext,
    options: SubmitOptions,
    images: tuple[str, ...],
    source: str,
) -> None:
    """Gradient-ascent visualizations without training first."""
    from orchestrator.plans import plan_visualize

    photos = [Path(i) for i in images if image_kind(i) == ImageKind.PHOTO]
    _submit(
        cli,
        options,
        lambda v: plan_visualize(v, images=list(images), seed=options.base_seed, source=source),
        photos=photos,
        compare_profiles=False,
    )


# ---------------------------------------------------------------- status, cancel, retry
@main.command()
@click.argument("target", required=False)
@click.option("--watch", is_flag=True, help="Redraw live until every run has ended.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
@pass_cli
@handle_errors
def status(cli: CliContext, target: str | None, watch: bool, as_json: bool) -> None:
    """Runs of a sweep (default: the latest) or one run (with its metric history)."""
    from orchestrator import monitor
    from orchestrator import rows as status_rows
    from orchestrator.runs import resolve_sweep

    db = cli.db()
    if target and target.startswith("r-"):
        detail = status_rows.run_detail(db, target)
        if as_json:
            click.echo(json.dumps(detail, indent=2, default=str))
        else:
            from storage.stores import open_store

            for line in monitor.run_lines(detail, open_store(cli.settings)):
                click.echo(line)
        return
    sweep_id = resolve_sweep(db, target)
    console = monitor.make_console()  # a pipe or a log: nothing squeezed into 80 columns
    if watch and not as_json:
        from orchestrator.follow import report_location

        if status_rows.all_finished(monitor.watch(db, sweep_id, console)):
            monitor.say(console, report_location(cli.settings, db, sweep_id))
        return
    rows = status_rows.sweep_rows(db, sweep_id)
    if as_json:
        click.echo(
            json.dumps({"sweep_id": sweep_id, "runs": [r.to_json() for r in rows]}, indent=2, default=str)
        )
    else:
        profile = monitor.describe_sweep(db, sweep_id)
        console.print(monitor.render_sweep(console, sweep_id, rows, profile))


@main.command()
@click.argument("target", metavar="RUN_OR_SWEEP_ID")
@pass_cli
@handle_errors
def cancel(cli: CliContext, target: str) -> None:
    """Cancel a run (and what cannot run without it), or every unfinished run of a sweep.

    Queued runs never start; running ones stop at the end of their epoch (at once when their worker is
    gone). Cancelling one run leaves the sweep's report: it reports what finished.
    """
    from orchestrator.runs import cancel_run, cancel_sweep
    from storage.models import RunStatus

    lease = cli.settings.lease_seconds
    one_run = target.startswith("r-")
    done = (
        cancel_run(cli.db(), target, lease_seconds=lease)
        if one_run
        else cancel_sweep(cli.db(), target, lease_seconds=lease)
    )
    for c in done:
        what = (
            "cancelled" if c.outcome == RunStatus.CANCELLED else "will stop at the end of its current epoch"
        )
        click.echo(f"{c.run}: {what}{f' (depends on {c.because_of})' if c.because_of else ''}")
    if not one_run:
        click.echo(
            f"`orchestrator report {target}` reports what finished; `orchestrator retry {target}` resumes"
        )


@main.command()
@click.argument("target", metavar="RUN_OR_SWEEP_ID")
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow until done (default: on the embedded broker, with a local worker, as submit does).",
)
@pass_cli
@handle_errors
def retry(cli: CliContext, target: str, wait: bool | None) -> None:
    """Queue failed or cancelled runs again: one run (and its dependents) or all of a sweep's.
    Trainings resume from their last checkpoint."""
    from contract.version import code_identity
    from orchestrator import preflight
    from orchestrator.runs import retry as requeue
    from orchestrator.runs import retry_targets, sweep_of
    from orchestrator.services import check_broker
    from storage.models import RunKind
    from worker.dispatch import dispatch_ready

    db = cli.db()
    settings = cli.settings
    app = check_broker(settings)
    work = retry_targets(db, target)  # refuses (exit 2) a run or sweep with nothing to retry
    if settings.embedded_broker:
        preflight.check_local_run(settings, work)
    sweep_id = sweep_of(db, target)
    for r in requeue(db, target, code_identity=code_identity()):  # retried for the code retrying
        resume = " (resumes from its last checkpoint)" if r.resumes else ""
        if not r.resumes and r.kind == RunKind.TRAIN:
            resume = " (starts from the first epoch: it never saved a checkpoint)"
        click.echo(f"{r.run}: queued again{resume}{f' (depends on {r.because_of})' if r.because_of else ''}")
    dispatch_ready(app, db)
    _follow_or_hint(settings, db, sweep_id, wait)


# ---------------------------------------------------------------- check
@main.command()
@click.argument("target", required=False, metavar="[SWEEP_OR_RUN]")
@click.option(
    "--repair",
    is_flag=True,
    help="Mark each damaged run that succeeded as failed (naming the damage), so the next submit of "
    "its plan runs it again instead of reusing it.",
)
@pass_cli
@handle_errors
def check(cli: CliContext, target: str | None, repair: bool) -> None:
    """Verify every run's artifacts (sha256) and checkpoints (default: all runs), following cached runs
    to the runs they reuse; exit 1 on a problem."""
    from orchestrator.check import check as check_runs
    from orchestrator.check import repair as repair_runs
    from storage.stores import open_store

    result = check_runs(cli.db(), open_store(cli.settings), target)
    for problem in result.problems:
        click.echo(str(problem))
    verdict = "all intact" if result.intact else f"{len(result.problems)} problem(s)"
    click.echo(f"checked {result.runs} run(s), {result.artifacts} artifact(s): {verdict}")
    if repair and not result.intact:
        for run_id in repair_runs(cli.db(), result.problems):
            click.echo(f"{run_id}: marked failed (damaged); the next submit of its plan runs it again")
    _warn_unreferenced(cli, target)
    if not result.intact:
        sys.exit(1)


def _warn_unreferenced(cli: CliContext, target: str | None) -> None:
    """Files of lost attempts are no damage (nothing reads them): a warning with the way out."""
    from orchestrator.check import runs_in_scope
    from orchestrator.gc import find_garbage
    from storage.stores import open_store

    run_ids = None
    if target is not None:
        with cli.db().session(readonly=True) as s:
            run_ids = [r.id for r in runs_in_scope(s, target)]
    store = open_store(cli.settings)
    garbage = find_garbage(cli.db(), store, lease_seconds=cli.settings.lease_seconds, run_ids=run_ids)
    if garbage.files:
        click.echo(
            f"warning: {len(garbage.files)} unreferenced file(s) of lost attempts, "
            f"{garbage.bytes / 1e6:,.1f} MB: `orchestrator gc` removes them"
        )


# ---------------------------------------------------------------- gc
@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@pass_cli
@handle_errors
def gc(cli: CliContext, dry_run: bool) -> None:
    """Remove files of lost attempts that no run references (never a running attempt's)."""
    from orchestrator.gc import find_garbage, remove
    from storage.stores import open_store

    store = open_store(cli.settings)
    garbage = find_garbage(cli.db(), store, lease_seconds=cli.settings.lease_seconds)
    if not dry_run:
        remove(store, garbage)
    for file in garbage.files:
        click.echo(f"{'would remove' if dry_run else 'removed'} {file.path} ({file.size:,} bytes)")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {len(garbage.files)} file(s), {garbage.bytes / 1e6:,.1f} MB")


# ---------------------------------------------------------------- report
@main.command()
@click.argument("sweep_id", required=False)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder.")
@pass_cli
@handle_errors
def report(cli: CliContext, sweep_id: str | None, out: Path | None) -> None:
    """Figures 1-8, results table and a self-contained report.html for a sweep (default: the latest)."""
    from orchestrator.runs import resolve_sweep
    from report.build import publish, render_report
    from report.data import NoSweepError, UnknownSweepError, load_report_data
    from storage.stores import open_store

    if out is not None:
        _check_out_folder(out)
    db = cli.db()
    sweep_id = resolve_sweep(db, sweep_id)
    store = open_store(cli.settings)
    try:
        # A snapshot in one short read-only transaction; drawing happens after it, holding no lock.
        with db.session(readonly=True) as s:
            data = load_report_data(s, store, sweep_id)
    except (UnknownSweepError, NoSweepError) as exc:
        raise UserError(str(exc)) from None
    try:
        result = render_report(data, out)
    except OSError as exc:  # the disk filled up, a file vanished meanwhile: one line, not a traceback
        where = exc.filename or out
        raise OrchestratorError(f"report: cannot write {where}: {exc.strerror or exc}") from None
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {result.html}")
    if out is None and not store.is_local:
        click.echo(f"published: {publish(store, result)}")
    click.echo(f"wrote {len(result.paths)} files in {result.seconds:.2f} s")


def _check_out_folder(out: Path) -> None:
    """--out must be a folder that exists or can be created, and that can be written."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out: {existing} is a file, not a folder; give a folder (created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out: cannot write in {existing} (permission denied)")


# ---------------------------------------------------------------- workers
@main.command()
@click.option(
    "--gpu", type=click.IntRange(min=0), default=None, help="Pin to this GPU index (CUDA_VISIBLE_DEVICES)."
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks at once (sharing one GPU).",
)
@click.option("--name", default=None, help="Worker name (default: cpu-xxxx@host or gpuN-xxxx@host).")
@click.option("--loglevel", default="INFO", show_default=True)
@pass_cli
@handle_errors
def worker(cli: CliContext, gpu: int | None, slots: int, name: str | None, loglevel: str) -> None:
    """Start a Celery worker (replaces this process, so signals reach Celery directly)."""
    from orchestrator import preflight
    from orchestrator.host import nvidia_gpus
    from orchestrator.services import check_broker
    from worker.launch import worker_launch

    launch = worker_launch(gpu=gpu, slots=slots, name=name, loglevel=loglevel)
    if gpu is not None:
        # Asked of the driver, not of TensorFlow: this process must stay light.
        gpus = nvidia_gpus()
        if gpu >= len(gpus):
            seen = ", ".join(f"{i} ({n})" for i, n in enumerate(gpus)) or "none (no NVIDIA driver or GPU)"
            raise UserError(f"--gpu: no GPU {gpu} on this machine; NVIDIA GPUs found: {seen}")
    preflight.check_worker_paths(cli.settings)  # a wrong data path fails here, not in the first task
    preflight.check_worker_store(cli.settings)  # and a store this host cannot write and read
    for key, value in (
        ("CONVLAB_CIFAR10", cli.settings.cifar10_path),
        ("CONVLAB_WEIGHTS_DIR", cli.settings.weights_dir),
    ):
        # A path made absolute: what was checked is what the task processes read. An object-store URL
        # stays one: each task resolves it into this host's verified cache.
        if value is not None:
            launch.env[key] = value if is_object_url(value) else str(Path(value).expanduser().absolute())
    cli.db()  # create or check the schema before the worker starts (and fail early if unreachable)
    check_broker(cli.settings)
    click.echo(f"starting worker {launch.name} ({launch.env['CONVLAB_WORKER_DEVICE']})", err=True)
    sys.stdout.flush()
    os.execvpe(launch.argv[0], launch.argv, launch.env)


@main.command()
@pass_cli
@handle_errors
def workers(cli: CliContext) -> None:
    """Live workers, the code each runs and what they run; runs no live worker's code may claim."""
    from contract.version import SHORT, code_identity
    from orchestrator.services import live_workers, runs_without_a_worker_of_their_code

    db = cli.db()
    states = live_workers(cli.settings, db)
    if not states:
        click.echo("no live workers (start one with `orchestrator worker`)")
    here = code_identity()
    for w in states:
        doing = ", ".join(f"{run} ({what}, epoch {epoch}/{total})" for run, what, epoch, total in w.running)
        code = (w.code_identity or "not recorded")[:SHORT]
        if w.code_identity and w.code_identity != here:
            code += f" (not this code, {here[:SHORT]}: it runs no run submitted from here)"
        click.echo(
            f"{w.name}  {w.device}  slots={w.slots}  seen {w.seen_seconds_ago:.0f}s ago  code {code}  "
            f"running: {doing or 'nothing'}"
        )
    for r in runs_without_a_worker_of_their_code(cli.settings, db):
        click.echo(
            f"{r.run_id} ({r.what}): queued for code {r.code_identity[:SHORT]}, and no worker with that "
            "code is running (start one from that code, or submit again to run it with another)"
        )


# ---------------------------------------------------------------- db
@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_cli
@handle_errors
def db_upgrade(cli: CliContext) -> None:
    """Upgrade the database to the latest migration (creating it if needed)."""
    from storage.db import current_revision, upgrade

    upgrade(cli.settings.database_url)
    click.echo(
        f"{mask_url(cli.settings.database_url)} at revision {current_revision(cli.settings.database_url)}"
    )


# ---------------------------------------------------------------- results out: export, compare, tensorboard
def _write_out(out: Path, text: str) -> None:
    """--out names a file: written atomically (a reader never sees half), its folder created."""
    from storage.artifacts import write_atomically

    if out.is_dir():
        raise UserError(f"--out: {out} is a folder; give a file name")
    try:
        write_atomically(out, text.encode("utf-8"))
    except OSError as exc:
        raise OrchestratorError(f"--out: cannot write {out}: {exc.strerror or exc}") from None


@main.command("export")
@click.argument("target", required=False, metavar="[SWEEP_OR_RUN]")
@click.option("--format", "fmt", type=OneOf(("csv", "json")), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="A file (default: stdout).")
@pass_cli
@handle_errors
def export_command(cli: CliContext, target: str | None, fmt: str, out: Path | None) -> None:
    """Every epoch of a sweep's trainings (default: the latest sweep) or of one training, one row per run
    and epoch, with the run's settings as spec.<key> columns."""
    from orchestrator import export
    from orchestrator.results import load_target

    with cli.db().session(readonly=True) as s:
        results = load_target(s, target)
    text = export.render(results, fmt)
    if out is None:
        click.echo(text, nl=False)
        return
    _write_out(out, text)
    rows = sum(len(t.epochs) for t in results.trainings)
    click.echo(
        f"wrote {counted(rows, 'row')} ({counted(len(results.trainings), 'training')}) to {out}", err=True
    )


@main.command()
@click.argument("sweeps", nargs=-1, metavar="SWEEP SWEEP...")
@pass_cli
@handle_errors
def compare(cli: CliContext, sweeps: tuple[str, ...]) -> None:
    """What differs in the sweeps' settings, and their trainings' final / best validation accuracy side
    by side (laid out to the terminal, 80 columns in a pipe)."""
    import shutil

    from orchestrator.compare import compare as compare_sweeps
    from orchestrator.compare_view import render
    from orchestrator.results import load_sweep
    from storage import repository as repo

    if len(sweeps) < 2:
        raise UserError("compare: give two sweeps or more, e.g. `orchestrator compare s-aaa s-bbb`")
    with cli.db().session(readonly=True) as s:
        results = [load_sweep(s, repo.get_sweep(s, i).id) for i in sweeps]
    click.echo(render(compare_sweeps(results), width=shutil.get_terminal_size((80, 24)).columns))


@main.command()
@click.argument("sweeps", nargs=-1, metavar="[SWEEP...]")
@click.option(
    "--logdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write (default: $CONVLAB_HOME/tensorboard).",
)
@click.option("--follow", "--watch", "follow", is_flag=True, help="Keep appending epochs as they land.")
@click.option(
    "--every", type=click.FloatRange(min=0.2), default=5.0, show_default=True, help="Seconds between looks."
)
@pass_cli
@handle_errors
def tensorboard(
    cli: CliContext, sweeps: tuple[str, ...], logdir: Path | None, follow: bool, every: float
) -> None:
    """Every training's epochs (default: of every sweep) as TensorBoard event files, one run folder per
    training (SWEEP/LABEL); view them with `tensorboard --logdir DIR`."""
    import time

    from orchestrator.results import load_sweeps
    from orchestrator.tensorboard_export import EventFiles

    logdir = logdir if logdir is not None else cli.settings.home / "tensorboard"
    if logdir.exists() and not logdir.is_dir():
        raise UserError(f"--logdir: {logdir} is a file, not a folder")
    files = EventFiles(logdir)
    db = cli.db()
    first = True
    try:
        while True:
            with db.session(readonly=True) as s:
                results = load_sweeps(s, sweeps)
            written = files.sync(results)
            if first:
                epochs = sum(w.new_epochs for w in written)
                click.echo(
                    f"wrote {counted(len(written), 'training')} ({counted(epochs, 'epoch')}) under {logdir}"
                )
                click.echo(f"view them: tensorboard --logdir {logdir}")
                first = False
            else:
                for w in written:
                    what = "rewritten" if w.rewritten else f"+{w.new_epochs} epoch(s)"
                    click.echo(f"{w.run_dir.relative_to(logdir)}: {what}")
            if not follow:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped following; {logdir} holds every epoch written so far") from None


if __name__ == "__main__":
    main()
