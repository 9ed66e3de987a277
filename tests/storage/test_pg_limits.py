"""PostgreSQL sessions cannot hang the fleet: lock, statement and idle-transaction timeouts, TCP keepalives.

These run against the real server with real processes: a helper child takes a row lock through convlab's
engine and freezes itself (SIGSTOP) inside its transaction.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from contract.settings import mask_url
from storage import db as dbmod
from storage.db import SCHEMA_REVISION, Database, DatabaseTimeout, PgLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
# Short values so the limits act within seconds; the helper's idle timeout is well above the waiter's
# lock_timeout so that (a) sees the lock timeout while the frozen session still holds the row.
LOCK_TIMEOUT_MS = 1_000
HELPER_IDLE_MS = 6_000


@pytest.fixture
def schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema holding ``locked_rows`` (id 1, value 1); dropped after."""
    schema = f"t_limits_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in postgres_url else "?"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}".locked_rows (id int PRIMARY KEY, value int NOT NULL)'))
        conn.execute(sa.text(f'INSERT INTO "{schema}".locked_rows VALUES (1, 1)'))
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"helper said nothing within {timeout} s (exit code {proc.poll()})")
    line = proc.stdout.readline()
    assert line, f"helper exited without taking the lock (exit code {proc.wait(5)})"
    return line.strip()


def _wait_stopped(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # WUNTRACED reports a stop without reaping the child; Popen can still kill and wait for it.
        got, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if got == pid and os.WIFSTOPPED(status):
            return
        assert got == 0, f"helper ended instead of freezing (status {status})"
        time.sleep(0.01)
    raise AssertionError(f"helper did not stop itself within {timeout} s")


def _backend_alive(admin: sa.Engine, backend_pid: int) -> str | None:
    with admin.connect() as conn:
        return conn.execute(
            sa.text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": backend_pid}
        ).scalar()


def _value(database: Database) -> int:
    with database.session(readonly=True) as s:
        return s.execute(sa.text("SELECT value FROM locked_rows WHERE id = 1")).scalar_one()


def test_frozen_lock_holder_times_out_waiters_and_is_terminated(schema_url: str, postgres_url: str) -> None:
    impatient = Database(schema_url, pg_limits=PgLimits(lock_timeout_ms=LOCK_TIMEOUT_MS))
    patient = Database(schema_url, pg_limits=PgLimits(lock_timeout_ms=30_000))
    admin = sa.create_engine(postgres_url)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # this worktree's code, not an installed copy
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.storage._lock_holder", schema_url, str(HELPER_IDLE_MS)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        backend_pid = int(_read_line(proc, timeout=60))
        locked_at = time.monotonic()
        _wait_stopped(proc.pid, timeout=10)
        assert _backend_alive(admin, backend_pid) == "idle in transaction"

        # (a) A writer of the locked row gets a clear error after about lock_timeout, not a hang.
        start = time.monotonic()
        with pytest.raises(DatabaseTimeout, match="lock_timeout") as info, impatient.session() as s:
            s.execute(sa.text("UPDATE locked_rows SET value = 2 WHERE id = 1"))
        waited = time.monotonic() - start
        assert LOCK_TIMEOUT_MS / 1000 * 0.9 <= waited < HELPER_IDLE_MS / 1000 - 1, waited
        assert str(info.value).startswith(f"database {mask_url(schema_url)}: gave up waiting for a lock")
        assert _backend_alive(admin, backend_pid) == "idle in transaction", "the holder must still be there"
        assert _value(impatient) == 1

        # (b) The server ends the frozen session after idle_in_transaction_session_timeout, releasing its
        # lock: a patient writer then goes through, long before its own 30 s lock_timeout.
        with patient.session() as s:
            s.execute(sa.text("UPDATE locked_rows SET value = 2 WHERE id = 1"))
        released_after = time.monotonic() - locked_at
        assert HELPER_IDLE_MS / 1000 - 1 <= released_after < HELPER_IDLE_MS / 1000 + 15, released_after
        assert _value(patient) == 2
        assert proc.poll() is None, "the helper is still frozen: the server, not the client, ended it"
        deadline = time.monotonic() + 10
        while _backend_alive(admin, backend_pid) is not None:
            assert time.monotonic() < deadline, "the frozen session's backend is still there"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL also ends a stopped process
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        impatient.dispose()
        patient.dispose()
        admin.dispose()


def test_statement_timeout_is_a_clear_error(schema_url: str) -> None:
    database = Database(schema_url, pg_limits=PgLimits(statement_timeout_ms=200))
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseTimeout, match="statement_timeout"), database.session() as s:
            s.execute(sa.text("SELECT pg_sleep(5)"))
        assert time.monotonic() - start < 4
        with database.session() as s:  # the pool hands out a working connection afterwards
            assert s.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        database.dispose()


def _shown(database: Database, setting: str) -> str:
    with database.session(readonly=True) as s:
        return str(s.execute(sa.text(f"SHOW {setting}")).scalar())


def _milliseconds(database: Database) -> tuple[int, ...]:
    """The three limits as the server holds them for a convlab session (pg_settings: plain ms)."""
    names = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
    with database.session(readonly=True) as s:
        rows = dict(
            s.execute(
                sa.text("SELECT name, setting FROM pg_settings WHERE name IN :names").bindparams(
                    sa.bindparam("names", expanding=True)
                ),
                {"names": list(names)},
            ).all()
        )
    return tuple(int(rows[name]) for name in names)


def test_limits_and_keepalives_are_in_effect(schema_url: str) -> None:
    default = Database(schema_url)
    custom = Database(
        schema_url,
        pg_limits=PgLimits(
            lock_timeout_ms=1500, statement_timeout_ms=2500, idle_in_transaction_timeout_ms=3500
        ),
    )
    try:
        assert _milliseconds(default) == (
            dbmod.PG_LOCK_TIMEOUT_MS,
            dbmod.PG_STATEMENT_TIMEOUT_MS,
            dbmod.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
        )
        assert _milliseconds(custom) == (1500, 2500, 3500)
        assert _shown(custom, "lock_timeout") == "1500ms"
        assert _shown(custom, "statement_timeout") == "2500ms"
        assert _shown(custom, "idle_in_transaction_session_timeout") == "3500ms"
        # The URL's own options (here search_path) are kept beside ours.
        assert _shown(default, "search_path").startswith("t_limits_")
        assert _value(default) == 1

        with default.engine.connect() as conn:
            fd = conn.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
            sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup: closing it is harmless
            try:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
                if hasattr(socket, "TCP_KEEPIDLE"):  # Linux names; the values libpq set on the socket
                    tcp = {
                        name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                        for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
                    }
                    assert tcp == {
                        "TCP_KEEPIDLE": dbmod.PG_KEEPALIVES_IDLE_S,
                        "TCP_KEEPINTVL": dbmod.PG_KEEPALIVES_INTERVAL_S,
                        "TCP_KEEPCNT": dbmod.PG_KEEPALIVES_COUNT,
                    }
            finally:
                sock.close()
    finally:
        default.dispose()
        custom.dispose()


def test_a_setting_in_the_url_overrides_the_default(schema_url: str) -> None:
    database = Database(schema_url + "%20-c%20lock_timeout%3D777")
    try:
        assert _shown(database, "lock_timeout") == "777ms"
        assert _milliseconds(database)[1] == dbmod.PG_STATEMENT_TIMEOUT_MS
    finally:
        database.dispose()


def test_migration_is_not_cut_by_the_session_limits(schema_url: str, postgres_url: str) -> None:
    """A schema upgrade waiting on the migration lock (another process migrating) longer than the
    session's lock_timeout and statement_timeout still completes, and the limits are back afterwards."""
    app = f"convlab-migrate-{uuid.uuid4().hex[:8]}"
    database = Database(
        f"{schema_url}&application_name={app}",
        pg_limits=PgLimits(lock_timeout_ms=300, statement_timeout_ms=300),
    )
    holder = sa.create_engine(postgres_url)
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            database.ensure_schema()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=migrate)
    try:
        with holder.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": dbmod._PG_MIGRATION_LOCK})
            conn.commit()
            thread.start()
            # Release only once the migration has waited well past both of its session limits.
            deadline = time.monotonic() + 30
            while True:
                waiting = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"
                        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                        " AND clock_timestamp() - query_start > interval '1 second'"
                    ),
                    {"app": app},
                ).scalar()
                conn.commit()
                if waiting or not thread.is_alive() or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": dbmod._PG_MIGRATION_LOCK})
            conn.commit()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert not errors, errors
        assert waiting == 1, "the migration never waited past its limits on the lock"
        assert database.current_revision() == SCHEMA_REVISION
        # SET LOCAL ended with the migration's transaction: pooled connections keep the session limits.
        assert _shown(database, "statement_timeout") == "300ms"
        assert _shown(database, "lock_timeout") == "300ms"
    finally:
        holder.dispose()  # closing the holder's connection frees the lock if the test failed holding it
        if thread.is_alive():
            thread.join(timeout=60)
        database.dispose()
