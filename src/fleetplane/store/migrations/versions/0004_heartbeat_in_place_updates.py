"""heartbeat flushes update runtimes in place

Drops the (workspace_id, last_heartbeat_at) index: no query reads it (health filters and
summaries evaluate a CASE over each workspace's rows, found through the (workspace_id,
agent_id) unique index), yet every liveness flush had to rewrite its entry for each runtime.
Without it, and with free space left in each page (fillfactor 80), PostgreSQL updates the
heartbeat columns as heap-only tuples: no index writes and less WAL per heartbeat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 21:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.drop_index("ix_runtimes_workspace_heartbeat")
    if op.get_bind().dialect.name == "postgresql":
        # Applies to pages written from now on; VACUUM FULL or pg_repack rewrites old ones.
        op.execute("ALTER TABLE runtimes SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE runtimes RESET (fillfactor)")
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runtimes_workspace_heartbeat", ["workspace_id", "last_heartbeat_at"], unique=False
        )
