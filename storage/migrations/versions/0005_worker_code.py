"""The code's identity on both sides: runs.code_identity (the code a run's identity was computed for, at
submit) and workers.code_identity (the code a worker loaded when it started)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("runs", "workers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("code_identity", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("runs", "workers"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("code_identity")
