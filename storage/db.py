"""Engines, sessions and the schema: one engine and one sessionmaker per process per database URL.

The caller owns the transaction (``with db.session() as s:`` commits on success, rolls back on error);
repository functions only flush. Keep each unit of work short: SQLite allows one writer at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from contract.settings import Settings, mask_url
from storage.errors import DatabaseUnavailable, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

# The schema revision this code is written for. Alembic (about 0.1 s to import) is loaded only when the
# database is not at it yet, so `orchestrator status` starts fast; a test checks this is alembic's head.
SCHEMA_REVISION = "0005"

try:  # POSIX file locks guard SQLite schema creation; elsewhere we rely on re-checking.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Long enough to wait out another process's write transaction (they are short), short enough to notice a hang.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# One worker process holds a connection or two; the orchestrator a few. Beyond that, queue rather than flood.
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5
PG_CONNECT_TIMEOUT_S = 10
# Server-side limits on every convlab PostgreSQL session, so that one stuck process cannot stall the fleet.
# A worker's transactions touch a few rows and last milliseconds; a lock held 10 s is held by a stuck
# session, and failing then leaves the waiter (heartbeat, reaper) time to retry within the 60 s lease.
PG_LOCK_TIMEOUT_MS = 10_000
# No convlab query takes more than a second (the report's largest read is a few thousand rows): a statement
# running a minute is a runaway, not a slow one. Migrations lift it (MIGRATION_STATEMENT_TIMEOUT_MS).
PG_STATEMENT_TIMEOUT_MS = 60_000
# The longest pause inside a convlab transaction is the report task rendering its figures (about 1.5 s);
# a minute means the client froze or died holding locks. Equal to the default lease, so a frozen worker's
# row locks are gone by the time another worker may take its run over.
PG_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
# Client-side TCP keepalives: a server lost without a FIN/RST (network cut, VM gone) is noticed after
# about idle + interval * count = 60 s instead of the kernel's default of two hours.
PG_KEEPALIVES_IDLE_S = 30
PG_KEEPALIVES_INTERVAL_S = 10
PG_KEEPALIVES_COUNT = 3
# Migrations may rewrite whole tables: never cut them mid-way (they would only roll back and be retried).
MIGRATION_STATEMENT_TIMEOUT_MS = 0
# A migration waits for the migration lock (another process migrating) and for table locks behind workers'
# short transactions; ten minutes covers any real migration and still ends a wait on a stuck one.
MIGRATION_LOCK_TIMEOUT_MS = 600_000
# libpq drivers: the only ones that take `options` and `keepalives*` connection parameters.
_LIBPQ_DRIVERS = ("psycopg", "psycopg2")
# Arbitrary but fixed: the PostgreSQL advisory lock that serialises concurrent schema upgrades.
_PG_MIGRATION_LOCK = zlib.crc32(b"convlab-migrations")


@dataclass(frozen=True)
class PgLimits:
    """The server-side timeouts set on each PostgreSQL session (milliseconds; 0 disables one).

    The defaults are the production values; tests pass shorter ones to see them act within seconds.
    """

    lock_timeout_ms: int = PG_LOCK_TIMEOUT_MS
    statement_timeout_ms: int = PG_STATEMENT_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = PG_IDLE_IN_TRANSACTION_TIMEOUT_MS

    def options(self) -> str:
        """The libpq ``options`` string that sets them at connection start-up (no extra round trip)."""
        return (
            f"-c lock_timeout={self.lock_timeout_ms}"
            f" -c statement_timeout={self.statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={self.idle_in_transaction_timeout_ms}"
        )


class DatabaseTimeout(StorageError):
    """PostgreSQL gave up on this session: a lock wait, a statement or an idle transaction ran too long."""

    def __init__(self, url: str, what: str, detail: str) -> None:
        self.url = mask_url(url)
        super().__init__(f"database {self.url}: {what} ({detail})")
        self.what = what
        self.detail = detail


# SQLSTATE -> what happened (57014 only when the message says timeout: a pg_cancel_backend shares it).
_TIMEOUT_SQLSTATES = {
    "55P03": "gave up waiting for a lock held by another session (lock_timeout)",
    "57014": "statement cancelled after running too long (statement_timeout)",
    "25P03": "transaction left idle too long, the server closed the session "
    "(idle_in_transaction_session_timeout)",
}


def _as_timeout(url: str, exc: DBAPIError) -> DatabaseTimeout | None:
    """The :class:`DatabaseTimeout` that ``exc`` is, or None."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if "idle-in-transaction timeout" in message:
        # The server's notice of termination can arrive without its SQLSTATE (as a lost connection).
        sqlstate = "25P03"
    if sqlstate == "57014" and "timeout" not in message:
        return None
    if sqlstate not in _TIMEOUT_SQLSTATES:
        return None
    return DatabaseTimeout(url, _TIMEOUT_SQLSTATES[sqlstate], message)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred and
    # would fail with SQLITE_BUSY instead of waiting when a reader later tries to write).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front, so busy_timeout applies and transactions never deadlock
    # on a read->write upgrade. Read-only sessions opt out with the ``convlab_readonly`` option.
    if conn.get_execution_options().get("convlab_readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _libpq_connect_args(parsed: URL, limits: PgLimits) -> dict[str, Any]:
    """Connection parameters for libpq; what the URL's query already sets wins (connect_args would not)."""
    query = parsed.query
    args: dict[str, Any] = {
        "connect_timeout": PG_CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": PG_KEEPALIVES_IDLE_S,
        "keepalives_interval": PG_KEEPALIVES_INTERVAL_S,
        "keepalives_count": PG_KEEPALIVES_COUNT,
    }
    args = {k: v for k, v in args.items() if k not in query}
    # connect_args replace the URL's own `options` (tests put search_path there): keep both, the URL's
    # last, so a `-c lock_timeout=...` written in the URL overrides ours.
    given = query.get("options", ())
    args["options"] = " ".join([limits.options(), *([given] if isinstance(given, str) else given)])
    return args


def make_engine(url: str, *, pg_limits: PgLimits | None = None) -> Engine:
    """An engine tuned for the backend: SQLite pragmas (WAL, busy_timeout, foreign keys) or a pinged pool.

    On PostgreSQL every session gets ``pg_limits`` (default :class:`PgLimits`) and TCP keepalives.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(url)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        if path is None:
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in _LIBPQ_DRIVERS:
        connect_args = _libpq_connect_args(parsed, pg_limits or PgLimits())
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=PG_POOL_SIZE,
        max_overflow=PG_MAX_OVERFLOW,
        connect_args=connect_args,
    )


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    """Wrap a connection failure, never leaking the password."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    password = make_url(url).password
    if password:
        reason = reason.replace(str(password), "***")
    return DatabaseUnavailable(url, reason)


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """Alembic configured in code with the migrations shipped inside the package (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _upgrade_engine(engine: Engine, url: str) -> None:
    """``alembic upgrade head`` on this engine, serialised across processes (file lock / advisory lock)."""
    from alembic import command

    try:
        lock_path = _sqlite_path(url) if engine.dialect.name == "sqlite" else None
        with _file_lock(lock_path), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # SET LOCAL: only this transaction; the pooled connection returns with the usual limits.
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {MIGRATION_STATEMENT_TIMEOUT_MS}")
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {MIGRATION_LOCK_TIMEOUT_MS}")
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(url, conn), "head")
    except (OperationalError, InterfaceError) as exc:
        timeout = _as_timeout(url, exc)
        if timeout is not None:
            raise timeout from exc
        if _is_connect_error(exc):
            raise unavailable(url, exc) from exc
        raise


def _is_connect_error(exc: DBAPIError) -> bool:
    return (
        bool(exc.connection_invalidated)
        or "connect" in str(exc.orig).lower()
        or "unable to open" in str(exc.orig)
    )


def _current(engine: Engine, url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        # Reading the revision needs no write lock (every fresh task process asks once).
        with engine.connect().execution_options(convlab_readonly=True) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(url, exc) from exc


def upgrade(url: str) -> str:
    """Bring the database at ``url`` to the latest revision (``orchestrator db upgrade``); idempotent."""
    engine = make_engine(url)
    try:
        _upgrade_engine(engine, url)
        rev = _current(engine, url)
    finally:
        engine.dispose()
    assert rev is not None
    return rev


def current_revision(url: str) -> str | None:
    """The database's alembic revision, or None for an empty database."""
    engine = make_engine(url)
    try:
        return _current(engine, url)
    finally:
        engine.dispose()


class Database:
    """One engine + one sessionmaker. Get it from :func:`get_database`, not by constructing it per call."""

    def __init__(self, url: str, *, pg_limits: PgLimits | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, pg_limits=pg_limits)
        # Objects stay readable after commit: commands print what a finished transaction returned.
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly = sessionmaker(
            self.engine.execution_options(convlab_readonly=True), expire_on_commit=False
        )
        self._schema_ready = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction: commits when the block ends, rolls back when it raises.

        ``readonly=True`` does not take SQLite's write lock up front; use it for queries only.
        A PostgreSQL timeout (see :class:`PgLimits`) is raised as :class:`DatabaseTimeout`.
        """
        maker = self._readonly if readonly else self._sessions
        try:
            with maker.begin() as s:
                try:
                    s.connection()
                except (OperationalError, InterfaceError) as exc:
                    raise unavailable(self.url, exc) from exc
                yield s
        except DBAPIError as exc:
            timeout = _as_timeout(self.url, exc)
            if timeout is None:
                raise
            raise timeout from exc

    def ensure_schema(self) -> None:
        """Create or upgrade the schema to the latest revision, once per process."""
        if self._schema_ready:
            return
        with self._lock:
            if self._schema_ready:
                return
            try:
                recorded = self._recorded_revision()
            except DatabaseUnavailable:
                if self.engine.dialect.name != "sqlite":
                    raise
                # Another process is creating the file right now (SQLite answers "locked" while the
                # journal mode is being set up): the upgrade below waits on its file lock, then finds the
                # schema at head, or raises a real error itself.
                recorded = None
            if recorded != SCHEMA_REVISION:
                _upgrade_engine(self.engine, self.url)
            self._schema_ready = True

    def current_revision(self) -> str | None:
        return _current(self.engine, self.url)

    def _recorded_revision(self) -> str | None:
        """The revision in ``alembic_version`` with plain SQL (None for a fresh database)."""
        try:
            with self.engine.connect().execution_options(convlab_readonly=True) as conn:
                if not self.engine.dialect.has_table(conn, "alembic_version"):
                    return None
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self.url, exc) from exc

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[tuple[int, str], Database] = {}
_databases_lock = threading.Lock()


def database_for_url(url: str, *, ensure_schema: bool = True) -> Database:
    """The process's :class:`Database` for ``url`` (a forked child gets its own, never the parent's pool)."""
    key = (os.getpid(), url)
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            db = _databases[key] = Database(url)
    if ensure_schema:
        db.ensure_schema()
    return db


def get_database(settings: Settings, *, ensure_schema: bool = True) -> Database:
    """The process's :class:`Database` for ``settings.database_url``; creates the schema on first use."""
    return database_for_url(settings.database_url, ensure_schema=ensure_schema)


def reset_databases() -> None:
    """Dispose every cached engine (tests, and after fork in a worker's child process)."""
    with _databases_lock:
        for db in _databases.values():
            db.dispose()
        _databases.clear()
