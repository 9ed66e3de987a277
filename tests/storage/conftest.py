"""Every storage test runs on SQLite and on the real PostgreSQL (each test in its own fresh schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.db import Database, database_for_url, reset_databases


def _pg_schema_url(base_url: str) -> tuple[str, str]:
    # Unique per process and test: parallel worktrees share one PostgreSQL database.
    schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in base_url else "?"
    return schema, f"{base_url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'convlab.db'}"
        reset_databases()
        return
    base = request.getfixturevalue("postgres_url")
    schema, url = _pg_schema_url(base)
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url
    finally:
        reset_databases()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Database:
    """The process's Database for a fresh URL, schema created at head."""
    return database_for_url(db_url)
