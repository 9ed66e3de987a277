"""The broker as the orchestrator sees it: reachability, sending, and the workers' table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contract.settings import Settings, mask_url
from orchestrator.errors import ServiceUnavailable
from orchestrator.rows import shown_worker
from storage import repository as repo
from storage.db import Database


def celery_app(settings: Settings) -> Any:
    from worker.app import create_app

    return create_app(settings)


def check_broker(settings: Settings, app: Any = None) -> Any:
    """Fail with the URL (password masked) when the broker cannot be reached; return the app."""
    from worker.app import check_broker as ping

    app = app or celery_app(settings)
    try:
        ping(app, timeout=3.0)
    except Exception as exc:  # noqa: BLE001 - kombu raises many kinds; all mean "unreachable"
        url = mask_url(settings.broker_url or "filesystem:// (embedded)")
        raise ServiceUnavailable(f"broker {url} unreachable: {str(exc).splitlines()[0][:200]}") from None
    return app


@dataclass(frozen=True)
class WorkerState:
    name: str
    device: str
    slots: int
    seen_seconds_ago: float
    running: tuple[tuple[str, str, int, int], ...]  # (run id, "kind label", last epoch, total epochs)
    code_identity: str | None = None  # the code it loaded at start; it claims only runs of that code


def live_workers(settings: Settings, db: Database) -> list[WorkerState]:
    # A worker refreshes its row every heartbeat; two missed leases means it is gone.
    within = 2 * settings.lease_seconds
    states = []
    with db.session(readonly=True) as s:
        for w in repo.live_workers(s, within_seconds=within):
            held = tuple(
                (r.id, f"{r.kind} {r.label}", r.last_epoch, r.total_epochs)
                for r in repo.runs_held_by(s, w.name)
            )
            seen = (datetime.now(UTC) - _aware(w.last_seen_at)).total_seconds()
            states.append(
                WorkerState(shown_worker(w.name) or w.name, w.device, w.slots, seen, held, w.code_identity)
            )
    return states


@dataclass(frozen=True)
class WaitingForCode:
    run_id: str
    what: str  # "kind label"
    code_identity: str


def runs_without_a_worker_of_their_code(settings: Settings, db: Database) -> list[WaitingForCode]:
    """Queued runs submitted for a code that no live worker runs: no worker claims them until one
    started from that code runs (``worker.code``)."""
    with db.session(readonly=True) as s:
        runs = repo.runs_for_no_live_worker(s, within_seconds=2 * settings.lease_seconds)
        return [WaitingForCode(r.id, f"{r.kind} {r.label}", str(r.code_identity)) for r in runs]


def live_worker_devices(settings: Settings, db: Database) -> list[str]:
    """The device labels of the workers alive now ("CPU", "GPU 0", ...), one per worker.

    Stricter than ``orchestrator workers``: a worker refreshes its row every maintenance pass, so one
    silent for three passes is taken as gone (a worker killed with SIGKILL leaves its row behind).
    """

    with db.session(readonly=True) as s:
        return [w.device for w in repo.live_workers(s, within_seconds=3 * settings.maintenance_seconds + 2)]


def live_worker_codes(settings: Settings, db: Database) -> set[str | None]:
    """The codes the workers alive now loaded (as :func:`live_worker_devices` judges alive); None for a
    worker from before codes were recorded."""
    with db.session(readonly=True) as s:
        within = 3 * settings.maintenance_seconds + 2
        return {w.code_identity for w in repo.live_workers(s, within_seconds=within)}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
