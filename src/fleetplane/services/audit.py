"""The audit log: one row per mutation, written in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetplane.store.models import AuditEntry

SYSTEM_ACTOR = "system"


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    now: datetime,
    org_id: str | None = None,
    workspace_id: str | None = None,
    before_hash: str | None = None,
    after_hash: str | None = None,
) -> AuditEntry:
    """Add an audit row to the session's transaction: it commits or rolls back with the change."""
    entry = AuditEntry(
        org_id=org_id,
        workspace_id=workspace_id,
        actor=actor,
        action=action,
        target=target,
        before_hash=before_hash,
        after_hash=after_hash,
        created_at=now,
    )
    session.add(entry)
    return entry


def list_for_workspace(
    session: Session, *, workspace_id: str, limit: int, before_seq: int | None
) -> list[AuditEntry]:
    """Audit rows of a workspace, newest first, strictly older than `before_seq` when given."""
    query = select(AuditEntry).where(AuditEntry.workspace_id == workspace_id)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    return list(session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))
