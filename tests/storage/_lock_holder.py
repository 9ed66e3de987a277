"""Child process for the PostgreSQL limits tests: take a row lock through convlab's engine, then freeze.

Usage: ``python -m tests.storage._lock_holder URL IDLE_IN_TRANSACTION_MS``. Prints its server backend's pid
once the lock is held, then stops itself with SIGSTOP while its transaction is still open, as a worker
frozen by a debugger, a stalled VM or swapping would. The test kills it (SIGKILL works on a stopped one).
"""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy import text

from storage.db import PgLimits, make_engine


def main(url: str, idle_ms: str) -> None:
    engine = make_engine(url, pg_limits=PgLimits(idle_in_transaction_timeout_ms=int(idle_ms)))
    conn = engine.connect()
    conn.begin()
    backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    conn.execute(text("SELECT value FROM locked_rows WHERE id = 1 FOR UPDATE")).all()
    print(backend_pid, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    # Not reached in the tests (they never send SIGCONT); without it the lock would end with the process.
    conn.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
