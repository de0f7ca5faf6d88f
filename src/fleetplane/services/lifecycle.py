"""The stale-runtime life cycle: archive long-dormant runtimes, bring them back, purge them,
and keep events, telemetry, evidence and alert logs within their retention.

Archiving is decided by the sweeper, but coming back needs no write on the heartbeat path: a
runtime is archived only while its newest heartbeat is older than `archived_at`, so the first
heartbeat from then on makes it visible at once (the sweeper then clears the mark). A heartbeat
stamped at the very instant of archiving counts as a return: it may have been buffered before
the archive and written after it, and a runtime heartbeating then was not dormant anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from fleetplane.domain.fleet import Drift, FleetSummary, Health
from fleetplane.services import audit
from fleetplane.store.fleet_queries import RuleContext, state_counts, state_counts_query
from fleetplane.store.models import (
    EvidenceRef,
    Runtime,
    RuntimeEvent,
    RuntimeTransition,
    TelemetryRecord,
    ThresholdCrossing,
    WebhookDelivery,
    Workspace,
)

if TYPE_CHECKING:
    # Annotations only: `services.fleet` imports this module for the archived clause.
    from fleetplane.services.fleet import FleetRules

# Rows deleted per table and workspace in one sweep: later sweeps continue, so one sweep's
# transaction stays short however much has piled up.
PRUNE_BATCH = 5000
PURGE_BATCH = 500


def archived_clause() -> ColumnElement[bool]:
    """True for runtimes that are archived now (archived, and no heartbeat since)."""
    return and_(
        Runtime.archived_at.is_not(None),
        or_(Runtime.last_heartbeat_at.is_(None), Runtime.last_heartbeat_at < Runtime.archived_at),
    )


def visible_clause() -> ColumnElement[bool]:
    """True for runtimes in the default inventory and counts: the complement of archived."""
    return or_(Runtime.archived_at.is_(None), Runtime.last_heartbeat_at >= Runtime.archived_at)


def is_archived(runtime: Runtime) -> bool:
    """The Python form of `archived_clause` for one loaded runtime."""
    if runtime.archived_at is None:
        return False
    return runtime.last_heartbeat_at is None or runtime.last_heartbeat_at < runtime.archived_at


@dataclass(frozen=True)
class Retention:
    """How long each kind of record is kept, and when dormant runtimes leave the inventory."""

    archive_after: timedelta
    purge_after: timedelta
    events: timedelta
    telemetry: timedelta
    evidence: timedelta
    history: timedelta
    delivery_log: timedelta


@dataclass(frozen=True)
class LifecycleChange:
    """A runtime archived, brought back or purged by one sweep."""

    runtime_id: str
    agent_id: str
    last_heartbeat_at: datetime | None
    archived_at: datetime | None


def rule_context(rules: FleetRules, *, now: datetime, desired_config_hash: str) -> RuleContext:
    """The SQL rule context for one workspace at `now`."""
    return RuleContext(
        now=now,
        thresholds=rules.thresholds,
        minimum_version=rules.minimum_version,
        full_sync_version=rules.full_sync_version,
        desired_config_hash=desired_config_hash,
    )


def workspace_summary(
    session: Session, *, workspace: Workspace, rules: FleetRules, now: datetime
) -> FleetSummary:
    """The workspace's fleet summary over visible runtimes, as the fleet API counts it."""
    context = rule_context(rules, now=now, desired_config_hash=workspace.config_hash)
    clauses = [Runtime.workspace_id == workspace.id, visible_clause()]
    counts = state_counts(session.execute(state_counts_query(context, clauses)).one())
    return FleetSummary.from_counts(counts.health, counts.drift)


def archived_count(session: Session, *, workspace_id: str) -> int:
    """How many of the workspace's runtimes are archived now."""
    query = select(func.count()).where(Runtime.workspace_id == workspace_id, archived_clause())
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class FleetCounts:
    """One workspace's visible runtimes per health and per drift, and its archived ones."""

    workspace_id: str
    health: dict[Health, int]
    drift: dict[Drift, int]
    archived: int


def fleet_counts(session: Session, *, rules: FleetRules, now: datetime) -> list[FleetCounts]:
    """Counts for every workspace, each by the fleet API's own summary query."""
    archived = dict(
        session.execute(
            select(Runtime.workspace_id, func.count())
            .where(archived_clause())
            .group_by(Runtime.workspace_id)
        ).all()
    )
    counts = []
    for workspace in session.scalars(select(Workspace).order_by(Workspace.id)):
        context = rule_context(rules, now=now, desired_config_hash=workspace.config_hash)
        clauses = [Runtime.workspace_id == workspace.id, visible_clause()]
        states = state_counts(session.execute(state_counts_query(context, clauses)).one())
        counts.append(
            FleetCounts(
                workspace.id, states.health, states.drift, int(archived.get(workspace.id, 0))
            )
        )
    return counts


def restore_returned(
    session: Session, *, workspace: Workspace, now: datetime
) -> list[LifecycleChange]:
    """Clear the archive mark of runtimes that heartbeated after it, with an audit row each."""
    rows = session.execute(
        update(Runtime)
        .where(
            Runtime.workspace_id == workspace.id,
            Runtime.archived_at.is_not(None),
            Runtime.last_heartbeat_at >= Runtime.archived_at,
        )
        .values(archived_at=None)
        .returning(Runtime.id, Runtime.agent_id, Runtime.last_heartbeat_at)
        .execution_options(synchronize_session=False)
    ).all()
    changes = [LifecycleChange(r.id, r.agent_id, r.last_heartbeat_at, None) for r in rows]
    for change in changes:
        _audit(session, workspace, change.runtime_id, "runtime.unarchive", now)
    return changes


def archive_dormant(
    session: Session,
    *,
    workspace: Workspace,
    rules: FleetRules,
    retention: Retention,
    now: datetime,
) -> list[LifecycleChange]:
    """Archive runtimes dormant for longer than `archive_after`, with an audit row each."""
    # Dormant since last heartbeat + dormant threshold; archived once that is archive_after ago.
    dormant_for = timedelta(seconds=rules.thresholds.dormant_seconds) + retention.archive_after
    rows = session.execute(
        update(Runtime)
        .where(
            Runtime.workspace_id == workspace.id,
            Runtime.archived_at.is_(None),
            Runtime.last_heartbeat_at < now - dormant_for,
        )
        .values(archived_at=now)
        .returning(Runtime.id, Runtime.agent_id, Runtime.last_heartbeat_at)
        .execution_options(synchronize_session=False)
    ).all()
    changes = [LifecycleChange(r.id, r.agent_id, r.last_heartbeat_at, now) for r in rows]
    for change in changes:
        _audit(session, workspace, change.runtime_id, "runtime.archive", now)
    return changes


def purge_archived(
    session: Session, *, workspace: Workspace, retention: Retention, now: datetime
) -> list[LifecycleChange]:
    """Delete runtimes archived for longer than `purge_after` with their sessions and events."""
    candidates = (
        select(Runtime.id)
        .where(
            Runtime.workspace_id == workspace.id,
            archived_clause(),
            Runtime.archived_at < now - retention.purge_after,
        )
        .limit(PURGE_BATCH)
    )
    # The archive condition is repeated in the DELETE itself, so that a heartbeat committed
    # between the two statements saves its runtime. Foreign keys cascade to sessions, events,
    # telemetry, evidence and history.
    rows = session.execute(
        delete(Runtime)
        .where(
            Runtime.id.in_(candidates.scalar_subquery()),
            archived_clause(),
        )
        .returning(Runtime.id, Runtime.agent_id, Runtime.last_heartbeat_at, Runtime.archived_at)
        .execution_options(synchronize_session=False)
    ).all()
    changes = [LifecycleChange(r.id, r.agent_id, r.last_heartbeat_at, r.archived_at) for r in rows]
    for change in changes:
        _audit(session, workspace, change.runtime_id, "runtime.purge", now)
    return changes


def _audit(
    session: Session, workspace: Workspace, runtime_id: str, action: str, now: datetime
) -> None:
    audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action=action,
        target=f"runtime:{runtime_id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )


def _prune(
    session: Session,
    *,
    key: InstrumentedAttribute[int] | InstrumentedAttribute[str],
    workspace_column: InstrumentedAttribute[str],
    time_column: InstrumentedAttribute[datetime],
    workspace_id: str,
    before: datetime,
    extra: list[ColumnElement[bool]] | None = None,
) -> int:
    doomed = (
        select(key)
        .where(workspace_column == workspace_id, time_column < before, *(extra or []))
        .limit(PRUNE_BATCH)
    )
    table = key.class_
    result = session.execute(
        delete(table)
        .where(key.in_(doomed.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def prune_expired(
    session: Session, *, workspace_id: str, retention: Retention, now: datetime
) -> int:
    """Delete the workspace's records older than their retention; returns the rows deleted."""
    deleted = _prune(
        session,
        key=RuntimeEvent.id,
        workspace_column=RuntimeEvent.workspace_id,
        time_column=RuntimeEvent.received_at,
        workspace_id=workspace_id,
        before=now - retention.events,
    )
    deleted += _prune(
        session,
        key=TelemetryRecord.id,
        workspace_column=TelemetryRecord.workspace_id,
        time_column=TelemetryRecord.received_at,
        workspace_id=workspace_id,
        before=now - retention.telemetry,
    )
    deleted += _prune(
        session,
        key=EvidenceRef.id,
        workspace_column=EvidenceRef.workspace_id,
        time_column=EvidenceRef.received_at,
        workspace_id=workspace_id,
        before=now - retention.evidence,
    )
    deleted += _prune(
        session,
        key=RuntimeTransition.id,
        workspace_column=RuntimeTransition.workspace_id,
        time_column=RuntimeTransition.detected_at,
        workspace_id=workspace_id,
        before=now - retention.history,
    )
    deleted += _prune(
        session,
        key=ThresholdCrossing.id,
        workspace_column=ThresholdCrossing.workspace_id,
        time_column=ThresholdCrossing.at,
        workspace_id=workspace_id,
        before=now - retention.history,
    )
    # A delivery still being retried stays, however old, until it succeeds or gives up.
    deleted += _prune(
        session,
        key=WebhookDelivery.id,
        workspace_column=WebhookDelivery.workspace_id,
        time_column=WebhookDelivery.created_at,
        workspace_id=workspace_id,
        before=now - retention.delivery_log,
        extra=[WebhookDelivery.status != "pending"],
    )
    return deleted
