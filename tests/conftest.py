"""Shared fixtures: real services (PostgreSQL, Redis) that skip locally and fail in CI when missing."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get(
    "CONVLAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONVLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def service_missing(what: str, reason: str) -> None:
    """Skip with the reason locally; in CI a missing service is a failure, never a silent skip."""
    message = f"{what} is not available: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services must be running)")
    pytest.skip(message)


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
