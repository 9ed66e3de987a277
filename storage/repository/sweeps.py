"""Sweeps: a plan submitted at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import (
    Sweep,
)


def create_sweep(
    s: Session, *, plan: str, profile: str, overrides: dict[str, Any], code_version: str
) -> Sweep:
    sweep = Sweep(plan=plan, profile=profile, overrides=dict(overrides), code_version=code_version)
    s.add(sweep)
    s.flush()
    return sweep


def get_sweep(s: Session, sweep_id: str) -> Sweep:
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound("sweep", sweep_id)
    return sweep


def latest_sweep(s: Session) -> Sweep | None:
    return s.scalars(select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(1)).first()
