"""Following a sweep from the terminal until it ends: the live table, the local worker, Ctrl-C.

The user-facing side of ``submit``/``retry`` (like :mod:`orchestrator.monitor`): it prints as it goes.
:mod:`orchestrator.submit` only writes and sends, and returns what it did.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from contract.settings import Settings
from orchestrator import preflight
from orchestrator.errors import Interrupted, OrchestratorError
from storage import repository as repo
from storage.db import Database
from storage.models import ENDED_BADLY, RunKind, RunStatus
from storage.stores import open_store


def next_step_hint(settings: Settings, db: Database, sweep_id: str) -> str:
    """What to run so that queued work gets done, and how to follow it."""
    from contract.version import SHORT, code_identity
    from orchestrator.services import live_worker_codes, live_worker_devices

    follow = f"`orchestrator status {sweep_id} --watch`"
    if live_worker_devices(settings, db):
        codes = live_worker_codes(settings, db)
        if None in codes or code_identity() in codes:
            return f"follow it with {follow}"
        theirs = ", ".join(sorted(str(c)[:SHORT] for c in codes))
        return (
            f"no live worker runs this code ({code_identity()[:SHORT]}; they run {theirs}), so nothing "
            f"will start: run `orchestrator worker` from this code, then follow with {follow}"
        )
    return (
        f"no worker is running, so nothing will start: run `orchestrator worker` (in another terminal; "
        f"it runs every queued run), then follow with {follow}"
    )


def follow_to_end(settings: Settings, db: Database, sweep_id: str, console: Any) -> None:
    """Follow a sweep until every run has ended, with a local worker on the embedded broker; then the
    report's path and the runs that did not succeed. Ctrl-C: see :func:`interrupt`."""
    from contract.version import SHORT, SourceWatch
    from orchestrator import monitor
    from orchestrator import rows as status_rows
    from orchestrator.local_worker import LocalWorker

    local = None
    source = SourceWatch()  # the local worker loads the code this process did: see below
    restore = _hang_up_like_ctrl_c()
    try:
        # A sweep whose runs all ended already (every one reused) needs no worker: starting one would cost
        # a second of process start and a line saying it ran.
        if settings.embedded_broker and not status_rows.all_finished(status_rows.sweep_rows(db, sweep_id)):
            local = LocalWorker(preflight.absolute_inputs(settings), sweep_id=sweep_id)
            monitor.say(console, f"started local worker {local.name} (log: {local.log_path})")

        def stalled(rows: list[status_rows.RunRow]) -> bool:
            """The source changed on disk: what runs ends with the code it started with, but the local
            worker claims nothing more (``worker.code``), so the sweep would never end."""
            changed = local is not None and source.changed()
            return changed and not any(r.status == RunStatus.RUNNING for r in rows)

        def finished(rows: list[status_rows.RunRow]) -> bool:
            alive = local is None or local.alive()
            return status_rows.all_finished(rows) or not alive or stalled(rows)

        rows = monitor.watch(db, sweep_id, console, until=finished)
        if stalled(rows) and not monitor.all_finished(rows):
            changed = f"{source.loaded[:SHORT]} -> {source.now[:SHORT]}"
            stopped = interrupt(settings, db, sweep_id, local).replace("interrupted: ", "")
            raise OrchestratorError(
                f"the source changed on disk while the sweep ran ({changed}); its local worker runs no "
                f"code but the one it loaded, so it was stopped: {stopped}"
            )
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
    if local and not status_rows.all_finished(rows):
        raise OrchestratorError(f"the local worker exited early; see {local.log_path}")
    failed = [r for r in rows if r.status in ENDED_BADLY]
    monitor.say(console, report_location(settings, db, sweep_id))
    if failed:
        for r in failed:
            monitor.say(console, f"{r.id} {r.kind} {r.label} {r.status}: {r.error or ''}")
        raise OrchestratorError(f"sweep {sweep_id}: {len(failed)} run(s) did not succeed")


def report_location(settings: Settings, db: Database, sweep_id: str) -> str:
    """Where the sweep's report is, once the sweep has ended: its path when this machine sees it; else
    (a worker on another host, with its own disk) where that worker wrote it and how to get one here."""
    from orchestrator.rows import shown_worker

    build_here = f"`orchestrator report {sweep_id}` builds one here"
    with db.session(readonly=True) as s:
        reports = [r for r in repo.sweep_runs(s, sweep_id) if r.kind == RunKind.REPORT]
    if not reports:
        return f"report: this plan makes none; {build_here}"
    run = reports[-1]
    store = open_store(settings)
    relpath = f"{store.sweep_report_dir(sweep_id)}/report.html"
    path = store.describe(relpath)
    if run.status != RunStatus.SUCCEEDED:
        return f"report: not built ({run.id} {run.status}); {build_here} from what finished"
    if not store.is_local:  # every host reads the object store; `report` makes a local copy
        return f"report: {path} (`orchestrator report {sweep_id} --out DIR` puts a copy here)"
    if store.exists(relpath):
        return f"report: {path}"
    where = shown_worker(run.worker) or "its worker"
    return (
        f"report: written by {where}, not found here at {path}; `orchestrator report {sweep_id}` builds "
        "one here (its pictures need the workers' artifacts folder)"
    )


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
