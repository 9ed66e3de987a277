"""Fixtures of the report tests: a real SQLite database and artifacts folder per test (see ``sweeps``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Base, Sweep
from tests.unit.report.sweeps import T0, MakeSweep, SweepBuilder


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'convlab.db'}")
    Base.metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def artifacts_root(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    return root


@pytest.fixture
def make_sweep(db: sessionmaker[Session], artifacts_root: Path) -> Iterator[MakeSweep]:
    sessions: list[Session] = []

    def make(
        sweep_id: str = "s-test000001",
        profile: str = "paper",
        overrides: dict | None = None,
        created_at: datetime = T0,
        plan: str = "all",
    ) -> SweepBuilder:
        session = db()
        sessions.append(session)
        sweep = Sweep(
            id=sweep_id,
            plan=plan,
            profile=profile,
            overrides=overrides or {},
            code_version="git:abc1234",
            created_at=created_at,
        )
        session.add(sweep)
        session.flush()
        return SweepBuilder(session=session, root=artifacts_root, sweep=sweep)

    yield make
    for s in sessions:
        s.commit()
        s.close()
