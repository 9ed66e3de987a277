"""`orchestrator`: the command line. Each command parses, calls library functions, prints.

Never imports TensorFlow; Celery is imported only by the commands that talk to the broker.
Errors: bad input -> one line naming the option, exit 2, nothing written; unreachable services -> one
line naming the URL (password masked), exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator.errors import OrchestratorError, UserError
from storage.config import Settings, SettingsError, load_settings, mask_url

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    settings: Settings
    _db: Any = field(default=None)

    def db(self) -> Any:
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
        from storage.errors import DatabaseUnavailable, IllegalTransition, NotFound, StorageError
        from worker.specs import SpecError

        try:
            return fn(*args, **kwargs)
        except (SpecError, SettingsError, NotFound, IllegalTransition) as exc:
            _fail(str(exc), 2)
        except DatabaseUnavailable as exc:
            _fail(str(exc), 1)
        except OrchestratorError as exc:
            _fail(str(exc), exc.exit_code)
        except StorageError as exc:
            _fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
            default="paper",
            show_default=True,
            help="paper (the seed exactly), quick (minutes on a CPU) or smoke (tests).",
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


@submit.command("all")
@_common_submit_options
@click.option("--seeds", default=1, show_default=True, type=int, help="Repetitions of each training regime.")
@click.option(
    "--image",
    type=click.Path(path_type=Path),
    default=None,
    help="The natural photo to visualize (default: matplotlib's grace_hopper.jpg).",
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
    flow.submit_plan(cli.settings, cli.db, plan, profile=profile, overrides=overrides, force=force, wait=wait)


@submit.command("train")
@_common_submit_options
@click.option("--regime", required=True, help="scratch, imagenet or finetune.")
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
    flow.submit_plan(cli.settings, cli.db, plan, profile=profile, overrides=overrides, force=force, wait=wait)


@submit.command("visualize")
@_common_submit_options
@click.option(
    "--image",
    "images",
    multiple=True,
    default=("random",),
    show_default=True,
    help="random, sine or a path to a photo (repeatable).",
)
@click.option("--source", default="imagenet", show_default=True, help="Network weights: imagenet or none.")
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
    photos = [Path(i) for i in images if i not in ("random", "sine")]
    for photo in photos:
        flow.check_image(photo)
    plan = plan_visualize(values, images=list(images), seed=base_seed, source=source)
    flow.submit_plan(
        cli.settings,
        cli.db,
        plan,
        profile=profile,
        overrides=overrides,
        force=force,
        wait=wait,
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
    from rich.console import Console

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
                click.echo(f"{key:>13}: {detail.get(key)}")
            for h in detail["history"]:
                click.echo(
                    f"  epoch {h['epoch']:>3} {h['phase']:5} loss {h['loss']:.4f} acc {h['accuracy']:.4f} "
                    f"val_acc {h['val_accuracy'] if h['val_accuracy'] is not None else float('nan'):.4f}"
                )
        return
    sweep_id = resolve_sweep(db, target)
    console = Console()
    if not console.is_terminal:
        console.width = 200  # a pipe or a log: do not squeeze the table into 80 columns
    if watch and not as_json:
        monitor.watch(db, sweep_id, console)
        return
    rows = monitor.sweep_rows(db, sweep_id)
    if as_json:
        click.echo(
            json.dumps({"sweep_id": sweep_id, "runs": [r.to_json() for r in rows]}, indent=2, default=str)
        )
    else:
        console.print(monitor.render_table(sweep_id, rows))


@main.command()
@click.argument("run_id")
@pass_cli
@handle_errors
def cancel(cli: CliContext, run_id: str) -> None:
    """Cancel a run (and what depends on it): queued ones never start, running ones stop at the next epoch."""
    from orchestrator.runs import cancel_run

    for line in cancel_run(cli.db(), run_id, lease_seconds=cli.settings.lease_seconds):
        click.echo(line)


@main.command()
@click.argument("run_id")
@pass_cli
@handle_errors
def retry(cli: CliContext, run_id: str) -> None:
    """Queue a failed or cancelled run again (and its dependents); it resumes from its checkpoint."""
    from orchestrator.runs import retry_run

    for line in retry_run(cli.settings, cli.db(), run_id):
        click.echo(line)


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
    if not result.intact:
        sys.exit(1)


# ---------------------------------------------------------------- report
@main.command()
@click.argument("sweep_id", required=False)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder.")
@pass_cli
@handle_errors
def report(cli: CliContext, sweep_id: str | None, out: Path | None) -> None:
    """Figures 1-8, results table and a self-contained report.html for a sweep (default: the latest)."""
    from orchestrator.report.build import render_report
    from orchestrator.report.data import load_report_data
    from orchestrator.runs import resolve_sweep

    db = cli.db()
    sweep_id = resolve_sweep(db, sweep_id)
    try:
        # A snapshot in one short read-only transaction; drawing happens after it, holding no lock.
        with db.session(readonly=True) as s:
            data = load_report_data(s, cli.settings.artifacts_dir, sweep_id)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    result = render_report(data, out)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {result.html}")
    click.echo(f"wrote {len(result.paths)} files in {result.seconds:.2f} s")


# ---------------------------------------------------------------- workers
@main.command()
@click.option("--gpu", type=int, default=None, help="Pin to this GPU index (CUDA_VISIBLE_DEVICES).")
@click.option("--slots", type=int, default=1, show_default=True, help="Tasks at once (sharing one GPU).")
@click.option("--name", default=None, help="Worker name (default: cpu-xxxx@host or gpuN-xxxx@host).")
@click.option("--loglevel", default="INFO", show_default=True)
@pass_cli
@handle_errors
def worker(cli: CliContext, gpu: int | None, slots: int, name: str | None, loglevel: str) -> None:
    """Start a Celery worker (replaces this process, so signals reach Celery directly)."""
    from orchestrator.services import check_broker
    from worker.launch import worker_launch

    try:
        launch = worker_launch(gpu=gpu, slots=slots, name=name, loglevel=loglevel)
    except ValueError as exc:
        raise UserError(str(exc)) from None
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

    rows = live_workers(cli.settings, cli.db())
    if not rows:
        click.echo("no live workers (start one with `orchestrator worker`)")
    for row in rows:
        click.echo(row)


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
