"""The database's clock, as SQL expressions: the one clock every lease decision is made with.

Heartbeats, lease expiry, takeovers and worker liveness compare times written by different hosts. Taking
each host's own clock would let a worker whose clock runs behind look stale (or one running ahead look
alive forever); taking the database server's ``now()`` in the same statement makes every comparison on
one clock. SQLite lives on one host, so its ``'now'`` is that host's clock, formatted the way SQLAlchemy
stores datetimes there (so stored values compare as text in time order).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, literal
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage.models import UTCDateTime

# SQLAlchemy stores SQLite datetimes as "YYYY-MM-DD HH:MM:SS.ffffff"; strftime's %f gives SS.SSS.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"


def _is_sqlite(s: Session) -> bool:
    return s.get_bind().dialect.name == "sqlite"


def db_now(s: Session) -> ColumnElement[datetime]:
    """The database server's current time (on PostgreSQL: the transaction's start, one value throughout)."""
    if _is_sqlite(s):
        return func.strftime(_SQLITE_FORMAT, "now", type_=UTCDateTime())
    return func.now(type_=UTCDateTime())


def db_ago(s: Session, seconds: float) -> ColumnElement[datetime]:
    """The database's time ``seconds`` ago: the cutoff of a lease."""
    if _is_sqlite(s):
        return func.strftime(_SQLITE_FORMAT, "now", f"-{float(seconds):.6f} seconds", type_=UTCDateTime())
    return func.now(type_=UTCDateTime()) - literal(timedelta(seconds=float(seconds)))
