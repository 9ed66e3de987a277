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
from contract.settings import Settings, SettingsError, load_settings, mask_url
from contract.specs import REGIMES, ImageKind, image_kind
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


def _common_submit_options(fn: F) -> F:
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
            type=int,
            help="Seed of the first repetition; repetitions use seed, seed+1, ...",
        ),
        click.option("--force", is_flag=True, help="Run even when an identical run already succeeded."),
        click.option(
            "--wait/--no-wait",
            default=None,
            help="Follow progress until done (default: wait on the embedded broker, not on Redis).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _submit(
    cli: CliContext,
    plan: Plan,
    *,
    profile: str,
    overrides: dict[str, str],
    force: bool,
    wait: bool | None,
    alternatives: dict[str, Plan] | None = None,
) -> None:
    """Write and send a plan, say what happened, then follow it (or say how to)."""
    from orchestrator import submit as flow

    settings = cli.settings
    submitted = flow.submit_plan(
        settings, cli.db, plan, profile=profile, overrides=overrides, force=force, alternatives=alternatives
    )
    for line in submitted.estimate:
        click.echo(line, err=True)
    click.echo(f"sweep {submitted.sweep_id}")
    if submitted.reused:
        click.echo(
            f"{len(submitted.reused)} run(s) reuse identical earlier runs (cached); --force reruns them"
        )
    _follow_or_hint(settings, cli.db(), submitted.sweep_id, wait)


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
    profile: str,
    assignments: tuple[str, ...],
    base_seed: int,
    force: bool,
    wait: bool | None,
    seeds: int,
    image: Path | None,
) -> None:
    """The seed's whole plan: three trainings, three visualizations, one report."""
    from orchestrator import submit as flow
    from orchestrator.plans import plan_all

    values, overrides = flow.profile_values(profile, assignments)
    photo = image or flow.default_photo()
    flow.check_image(photo)
    plan = plan_all(values, seeds=seeds, base_seed=base_seed, photo=str(photo))
    others = flow.alternative_plans(
        profile, lambda other: plan_all(other, seeds=seeds, base_seed=base_seed, photo=str(photo))
    )
    _submit(cli, plan, profile=profile, overrides=overrides, force=force, wait=wait, alternatives=others)


@submit.command("explain")
@_common_submit_options
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions of each training.")
@pass_cli
@handle_errors
def submit_explain(
    cli: CliContext,
    profile: str,
    assignments: tuple[str, ...],
    base_seed: int,
    force: bool,
    wait: bool | None,
    seeds: int,
) -> None:
    """Beyond the seed: its three regimes beside controlled changes that answer its open questions
    (BatchNorm frozen when fine-tuning; inputs upscaled to explain_input_size; augmentation), and a report."""
    from orchestrator import submit as flow
    from orchestrator.plans import plan_explain

    values, overrides = flow.profile_values(profile, assignments)
    plan = plan_explain(values, seeds=seeds, base_seed=base_seed)
    others = flow.alternative_plans(
        profile, lambda other: plan_explain(other, seeds=seeds, base_seed=base_seed)
    )
    _submit(cli, plan, profile=profile, overrides=overrides, force=force, wait=wait, alternatives=others)


@submit.command("train")
@_common_submit_options
@click.option("--regime", required=True, type=OneOf(REGIMES), help="The training regime.")
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions.")
@pass_cli
@handle_errors
def submit_train(
    cli: CliContext,
    profile: str,
    assignments: tuple[str, ...],
    base_seed: int,
    force: bool,
    wait: bool | None,
    regime: str,
    seeds: int,
) -> None:
    """One training regime (x seeds)."""
    from orchestrator import submit as flow
    from orchestrator.plans import plan_train

    values, overrides = flow.profile_values(profile, assignments)
    plan = plan_train(values, regime=regime, seeds=seeds, base_seed=base_seed)
    others = flow.alternative_plans(
        profile, lambda other: plan_train(other, regime=regime, seeds=seeds, base_seed=base_seed)
    )
    _submit(cli, plan, profile=profile, overrides=overrides, force=force, wait=wait, alternatives=others)


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
    profile: str,
    assignments: tuple[str, ...],
    base_seed: int,
    force: bool,
    wait: bool | None,
    images: tuple[str, ...],
    source: str,
) -> None:
    """Gradient-ascent visualizations without training first."""
    from orchestrator import submit as flow
    from orchestrator.plans import plan_visualize

    values, overrides = flow.profile_values(profile, assignments)
    photos = [Path(i) for i in images if image_kind(i) == ImageKind.PHOTO]
    for photo in photos:
        flow.check_image(photo)
    plan = plan_visualize(values, images=list(images), seed=base_seed, source=source)
    _submit(cli, plan, profile=profile, overrides=overrides, force=force, wait=wait)


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
    from orchestrator.runs import resolve_sweep

    db = cli.db()
    if target and target.startswith("r-"):
        detail = monitor.run_detail(db, target)
        if as_json:
            click.echo(json.dumps(detail, indent=2, default=str))
        else:
            for key in (
                "id",
                "kind",
                "label",
                "status",
                "epoch",
                "epochs",
                "val_accuracy",
                "attempts",
                "worker",
                "device",
                "error",
            ):
                value = detail.get(key)
                click.echo(f"{key:>13}: {round(value, 4) if isinstance(value, float) else value}")
            if detail.get("epoch_fraction") is not None:  # inside an epoch: how far, how fast
                fraction, rate = detail["epoch_fraction"], detail["live_images_per_second"]
                where = f"{detail['epoch'] + 1}, {fraction:.0%} of its batches"
                click.echo(f"{'in epoch':>13}: {where}, {rate:.0f} images/s")
            for h in detail["history"]:
                click.echo(
                    f"  epoch {h['epoch']:>3} {h['phase']:5} loss {h['loss']:.4f} acc {h['accuracy']:.4f} "
                    f"val_acc {h['val_accuracy'] if h['val_accuracy'] is not None else float('nan'):.4f}"
                )
        return
    sweep_id = resolve_sweep(db, target)
    console = monitor.make_console()  # a pipe or a log: nothing squeezed into 80 columns
    if watch and not as_json:
        monitor.watch(db, sweep_id, console)
        return
    rows = monitor.sweep_rows(db, sweep_id)
    if as_json:
        click.echo(
            json.dumps({"sweep_id": sweep_id, "runs": [r.to_json() for r in rows]}, indent=2, default=str)
        )
    else:
        console.print(monitor.render_sweep(console, sweep_id, rows, monitor.sweep_profile(db, sweep_id)))


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
    from orchestrator import preflight
    from orchestrator.runs import retry as requeue
    from orchestrator.runs import retry_targets, sweep_of
    from orchestrator.services import check_broker
    from worker.dispatch import dispatch_ready

    db = cli.db()
    settings = cli.settings
    app = check_broker(settings)
    work = retry_targets(db, target)  # refuses (exit 2) a run or sweep with nothing to retry
    if settings.embedded_broker:
        preflight.check_local_run(settings, work)
    sweep_id = sweep_of(db, target)
    for r in requeue(db, target):
        resume = " (resumes from its last checkpoint)" if r.resumes else ""
        click.echo(f"{r.run}: queued again{resume}{f' (depends on {r.because_of})' if r.because_of else ''}")
    dispatch_ready(app, db)
    _follow_or_hint(settings, db, sweep_id, wait)


# ---------------------------------------------------------------- check
@main.command()
@click.argument("target", required=False, metavar="[SWEEP_OR_RUN]")
@pass_cli
@handle_errors
def check(cli: CliContext, target: str | None) -> None:
    """Verify every run's artifacts (sha256) and checkpoints (default: all runs); exit 1 on a problem."""
    from orchestrator.check import check as check_runs
    from storage.artifacts import ArtifactStore

    result = check_runs(cli.db(), ArtifactStore(cli.settings.artifacts_dir), target)
    for problem in result.problems:
        click.echo(str(problem))
    verdict = "all intact" if result.intact else f"{len(result.problems)} problem(s)"
    click.echo(f"checked {result.runs} run(s), {result.artifacts} artifact(s): {verdict}")
    _warn_unreferenced(cli, target)
    if not result.intact:
        sys.exit(1)


def _warn_unreferenced(cli: CliContext, target: str | None) -> None:
    """Files of lost attempts are no damage (nothing reads them): a warning with the way out."""
    from orchestrator.check import runs_in_scope
    from orchestrator.gc import find_garbage
    from storage.artifacts import ArtifactStore

    run_ids = None
    if target is not None:
        with cli.db().session(readonly=True) as s:
            run_ids = [r.id for r in runs_in_scope(s, target)]
    store = ArtifactStore(cli.settings.artifacts_dir)
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
    from storage.artifacts import ArtifactStore

    store = ArtifactStore(cli.settings.artifacts_dir)
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
    from report.build import render_report
    from report.data import NoSweepError, UnknownSweepError, load_report_data

    if out is not None:
        _check_out_folder(out)
    db = cli.db()
    sweep_id = resolve_sweep(db, sweep_id)
    try:
        # A snapshot in one short read-only transaction; drawing happens after it, holding no lock.
        with db.session(readonly=True) as s:
            data = load_report_data(s, cli.settings.artifacts_dir, sweep_id)
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
    for key, value in (
        ("CONVLAB_CIFAR10", cli.settings.cifar10_path),
        ("CONVLAB_WEIGHTS_DIR", cli.settings.weights_dir),
    ):
        if value is not None:  # absolute: what was checked is what the task processes read
            launch.env[key] = str(Path(value).expanduser().absolute())
    cli.db()  # create or check the schema before the worker starts (and fail early if unreachable)
    check_broker(cli.settings)
    click.echo(f"starting worker {launch.name} ({launch.env['CONVLAB_WORKER_DEVICE']})", err=True)
    sys.stdout.flush()
    os.execvpe(launch.argv[0], launch.argv, launch.env)


@main.command()
@pass_cli
@handle_errors
def workers(cli: CliContext) -> None:
    """Live workers and what they run."""
    from orchestrator.services import live_workers

    states = live_workers(cli.settings, cli.db())
    if not states:
        click.echo("no live workers (start one with `orchestrator worker`)")
    for w in states:
        doing = ", ".join(f"{run} ({what}, epoch {epoch}/{total})" for run, what, epoch, total in w.running)
        click.echo(
            f"{w.name}  {w.device}  slots={w.slots}  seen {w.seen_seconds_ago:.0f}s ago  "
            f"running: {doing or 'nothing'}"
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


if __name__ == "__main__":
    main()
