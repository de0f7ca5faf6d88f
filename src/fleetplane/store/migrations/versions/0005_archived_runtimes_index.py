"""a partial index for archived runtimes

Every fleet page counts the workspace's archived runtimes; without an index that was a second
scan of all the workspace's rows (38 ms of a 131 ms page at 100,000 runtimes on PostgreSQL).
Archived runtimes are few, so a partial index on them is small, and it names no heartbeat
column: liveness flushes stay heap-only updates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runtimes_archived",
            ["workspace_id"],
            unique=False,
            postgresql_where=sa.text("archived_at IS NOT NULL"),
            sqlite_where=sa.text("archived_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.drop_index("ix_runtimes_archived")
