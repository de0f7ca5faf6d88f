"""The fleet rules of `domain.fleet` written as SQL, so filters and summaries run in the database.

`tests/store/test_fleet_queries.py` holds these expressions to the pure rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select

from fleetplane.domain.fleet import Drift, DriftReason, Health, HealthThresholds
from fleetplane.domain.versions import Compatibility, version_sort_key
from fleetplane.store.models import Runtime, RuntimeEvent

WORKSPACE_WARNING = "workspace_warning"


@dataclass(frozen=True)
class RuleContext:
    """What the SQL rules need: the server's now, thresholds, versions and the desired hash."""

    now: datetime
    thresholds: HealthThresholds
    minimum_version: str
    full_sync_version: str
    desired_config_hash: str


def health_expression(context: RuleContext) -> ColumnElement[str]:
    """SQL for SPEC 3.1: connected below the first threshold, stale up to and at the second."""
    connected_after = context.now - timedelta(seconds=context.thresholds.connected_seconds)
    dormant_before = context.now - timedelta(seconds=context.thresholds.dormant_seconds)
    last = Runtime.last_heartbeat_at
    return case(
        (last.is_(None), literal(Health.NEVER.value)),
        (last > connected_after, literal(Health.CONNECTED.value)),
        (last >= dormant_before, literal(Health.STALE.value)),
        else_=literal(Health.DORMANT.value),
    )


def compatibility_expression(context: RuleContext) -> ColumnElement[str]:
    """SQL for SPEC 3.2 over the byte-ordered version sort key."""
    key = Runtime.version_key
    return case(
        (key.is_(None), literal(Compatibility.UNKNOWN.value)),
        (key >= version_sort_key(context.full_sync_version), literal(Compatibility.FULL.value)),
        (key >= version_sort_key(context.minimum_version), literal(Compatibility.LIMITED.value)),
        else_=literal(Compatibility.UNSUPPORTED.value),
    )


def _drift_rows(
    context: RuleContext,
) -> list[tuple[ColumnElement[bool], Drift, DriftReason | None]]:
    key = Runtime.version_key
    below_minimum = and_(key.is_not(None), key < version_sort_key(context.minimum_version))
    below_full = and_(key.is_not(None), key < version_sort_key(context.full_sync_version))
    desired = context.desired_config_hash
    observed = Runtime.observed_config_hash
    return [
        (Runtime.last_heartbeat_at.is_(None), Drift.AWAITING_SYNC, DriftReason.NO_HEARTBEAT),
        (below_minimum, Drift.UPGRADE_REQUIRED, DriftReason.VERSION_BELOW_MINIMUM),
        (Runtime.apply_failed_hash == desired, Drift.NEEDS_RECONCILE, DriftReason.APPLY_FAILED),
        (observed.is_(None), Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_UNREPORTED),
        (observed != desired, Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_DIFFERS),
        (below_full, Drift.NEEDS_RECONCILE, DriftReason.VERSION_BELOW_FULL_SYNC),
    ]


def drift_expression(context: RuleContext) -> ColumnElement[str]:
    """SQL for SPEC 3.4's drift: the first matching row wins, as in `domain.fleet.drift`."""
    rows = _drift_rows(context)
    return case(
        *((condition, literal(drift.value)) for condition, drift, _ in rows),
        else_=literal(Drift.ALIGNED.value),
    )


def drift_reason_expression(context: RuleContext) -> ColumnElement[str | None]:
    """SQL for SPEC 3.4's `driftReason`, null when aligned."""
    rows = _drift_rows(context)
    return case(
        *((condition, literal(reason.value if reason else None)) for condition, _, reason in rows),
        else_=literal(None),
    )


def warnings_since(since: datetime) -> ColumnElement[int]:
    """Correlated count of a runtime's `workspace_warning` events received since `since`."""
    return (
        select(func.count())
        .where(
            RuntimeEvent.runtime_id == Runtime.id,
            RuntimeEvent.kind == WORKSPACE_WARNING,
            RuntimeEvent.received_at >= since,
        )
        .correlate(Runtime)
        .scalar_subquery()
    )


def fleet_filters(
    context: RuleContext,
    *,
    workspace_id: str,
    health: list[str] | None,
    drift: list[str] | None,
    text: str | None,
) -> list[ColumnElement[bool]]:
    """WHERE clauses for the fleet list and its summary."""
    clauses: list[ColumnElement[bool]] = [Runtime.workspace_id == workspace_id]
    if health:
        clauses.append(health_expression(context).in_(health))
    if drift:
        clauses.append(drift_expression(context).in_(drift))
    if text:
        escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        clauses.append(
            or_(
                func.lower(Runtime.agent_id).like(pattern, escape="\\"),
                func.lower(func.coalesce(Runtime.host_id, "")).like(pattern, escape="\\"),
            )
        )
    return clauses


def summary_query(
    context: RuleContext, clauses: list[ColumnElement[bool]]
) -> Select[str, str, int]:
    """Counts per (health, drift), computed by GROUP BY in the database."""
    states = rollout_summary_query(context, clauses).subquery()
    return select(states.c.health, states.c.drift, func.sum(states.c.n)).group_by(
        states.c.health, states.c.drift
    )


def rollout_summary_query(
    context: RuleContext, clauses: list[ColumnElement[bool]]
) -> Select[str, str, bool, int]:
    """Counts per (health, drift, on the desired hash), computed by GROUP BY in the database.

    The states are computed in a subquery so that GROUP BY names plain columns: PostgreSQL
    does not match a bound-parameter CASE in the select list with the same CASE in GROUP BY.
    """
    on_desired = case(
        (Runtime.observed_config_hash == context.desired_config_hash, literal(True)),
        else_=literal(False),
    )
    states = (
        select(
            health_expression(context).label("health"),
            drift_expression(context).label("drift"),
            on_desired.label("on_desired"),
        )
        .where(*clauses)
        .subquery()
    )
    return select(
        states.c.health, states.c.drift, states.c.on_desired, func.count().label("n")
    ).group_by(states.c.health, states.c.drift, states.c.on_desired)
