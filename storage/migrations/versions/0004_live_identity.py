"""One executed run per identity at a time: a partial unique index on runs.spec_hash over the runs that
are queued or running and follow no other run (two submits of one plan join instead of both training)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "reused_run_id IS NULL AND status IN ('queued', 'running')"


def upgrade() -> None:
    # Identical live runs from before the index (two submits at once): the oldest keeps computing, the
    # others follow it, as they would have joined it with this revision.
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(f"SELECT id, spec_hash FROM runs WHERE {LIVE} ORDER BY created_at, id")
    ).fetchall()
    owner: dict[str, str] = {}
    for run_id, spec_hash in rows:
        if spec_hash not in owner:
            owner[spec_hash] = run_id
            continue
        params = {"run": run_id, "owner": owner[spec_hash]}
        conn.execute(sa.text("UPDATE runs SET reused_run_id = :owner WHERE id = :run"), params)
        conn.execute(
            sa.text("INSERT INTO run_dependencies (run_id, depends_on_id) VALUES (:run, :owner)"), params
        )
    op.create_index(
        "uq_runs_live_identity",
        "runs",
        ["spec_hash"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_runs_live_identity", table_name="runs")
