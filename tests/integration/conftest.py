"""Fixtures for integration tests: tiny real-format data, and isolated stacks on real services."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny CIFAR-10 tarball and a weights folder with Keras's file name, made here (no download)."""
    from tests.datagen import write_fake_imagenet_weights, write_tiny_cifar10

    folder = tmp_path_factory.mktemp("data")
    tarball = write_tiny_cifar10(folder, n_train=200, n_test=100, as_tar=True)
    weights = write_fake_imagenet_weights(folder / "weights", alpha=0.25)
    return {"CONVLAB_CIFAR10": str(tarball), "CONVLAB_WEIGHTS_DIR": str(weights)}


def base_env(home: Path, data: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVLAB_")}
    env.update(data)
    env.update(
        CONVLAB_HOME=str(home),
        # Short leases so that recovery tests take seconds, not minutes.
        CONVLAB_LEASE_SECONDS="4",
        CONVLAB_HEARTBEAT_SECONDS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"convlab_it_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    from storage.db import reset_databases

    reset_databases()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


@pytest.fixture
def server_stack(
    tmp_path: Path, tiny_data: dict[str, str], pg_database: str, redis_broker: str
) -> Iterator[Stack]:
    """Redis broker + PostgreSQL database, the production set-up."""
    env = base_env(tmp_path, tiny_data)
    env.update(CONVLAB_DATABASE_URL=pg_database, CONVLAB_BROKER_URL=redis_broker)
    stack = Stack(home=tmp_path, env=env)
    yield stack
    stack.stop_all()


@pytest.fixture
def s3_stack(server_stack: Stack, s3_server, s3_prefix: str) -> Stack:  # type: ignore[no-untyped-def]
    """Redis + PostgreSQL + artifacts in an S3 server (SeaweedFS), under a prefix of this test's own:
    what several hosts that share no disk run on."""
    server_stack.env.update(s3_server.env(), CONVLAB_ARTIFACTS_URL=s3_server.url(s3_prefix))
    return server_stack


@pytest.fixture
def embedded_stack(tmp_path: Path, tiny_data: dict[str, str]) -> Iterator[Stack]:
    """No server at all: SQLite and the filesystem broker under CONVLAB_HOME."""
    stack = Stack(home=tmp_path, env=base_env(tmp_path, tiny_data))
    yield stack
    stack.stop_all()
