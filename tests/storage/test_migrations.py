from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage import db as dbmod
from storage.db import Database, current_revision, database_for_url, head_revision, upgrade
from storage.models import Base


def test_migrations_match_models(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_fresh_database_is_created_at_head_on_first_use(db_url: str) -> None:
    assert current_revision(db_url) is None
    db = database_for_url(db_url)
    assert db.current_revision() == head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert {"sweeps", "runs", "run_dependencies", "epoch_metrics", "artifacts", "workers"} <= tables


def test_upgrade_is_idempotent(db_url: str) -> None:
    assert upgrade(db_url) == head_revision()
    assert upgrade(db_url) == head_revision()
    assert current_revision(db_url) == head_revision()
    database_for_url(db_url).ensure_schema()  # already at head: nothing to do, no error


def test_migrations_ship_inside_the_package() -> None:
    assert (dbmod.MIGRATIONS_DIR / "env.py").is_file()
    assert list((dbmod.MIGRATIONS_DIR / "versions").glob("0001_*.py"))


def test_unreachable_database_raises_database_unavailable_with_masked_password() -> None:
    import pytest

    from storage.errors import DatabaseUnavailable

    url = "postgresql+psycopg://convlab:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(DatabaseUnavailable) as info:
        database_for_url(url)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(DatabaseUnavailable):
        current_revision(url)


def test_the_fast_schema_check_knows_the_latest_revision() -> None:
    from storage.db import SCHEMA_REVISION, head_revision

    assert head_revision() == SCHEMA_REVISION
