"""Status history: each runtime's health, drift and life-cycle transitions, as the sweeper
recorded them, and the reads that show them ("stale for 12 min, 2 h ago").

The sweeper keeps, per runtime, the state it last saw (`runtime_states`); a runtime whose
computed state differs from it gets one transition row per changed dimension, and the stored
state moves on, in one transaction. The comparison runs in the database, so a sweep reads only
the runtimes that changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, insert, or_, select, true, update
from sqlalchemy.orm import Session, aliased

from fleetplane.domain.errors import Invalid, NotFound
from fleetplane.domain.fleet import Drift, Health, HealthThresholds
from fleetplane.services import lifecycle, webhooks
from fleetplane.services.fleet import FleetRules
from fleetplane.services.lifecycle import LifecycleChange
from fleetplane.services.webhooks import AlertEvent
from fleetplane.store.fleet_queries import (
    drift_expression,
    drift_reason_expression,
    health_expression,
)
from fleetplane.store.models import (
    Runtime,
    RuntimeState,
    RuntimeTransition,
    Webhook,
    Workspace,
)


class TransitionKind(StrEnum):
    """What changed."""

    HEALTH = "health"
    DRIFT = "drift"
    LIFECYCLE = "lifecycle"


ACTIVE = "active"
ARCHIVED = "archived"
EVENT_OF_KIND = {
    TransitionKind.HEALTH: AlertEvent.HEALTH_CHANGED,
    TransitionKind.DRIFT: AlertEvent.DRIFT_CHANGED,
}


def health_changed_at(
    health: Health,
    *,
    last_heartbeat_at: datetime | None,
    enrolled_at: datetime,
    thresholds: HealthThresholds,
) -> datetime:
    """When a runtime entered `health`, as far as its heartbeats tell.

    Stale and dormant start a fixed time after the last heartbeat; connected is dated by the
    newest heartbeat (the runtime came back at or shortly before it, within one sweep).
    """
    if health is Health.NEVER or last_heartbeat_at is None:
        return enrolled_at
    if health is Health.CONNECTED:
        return last_heartbeat_at
    if health is Health.STALE:
        return last_heartbeat_at + timedelta(seconds=thresholds.connected_seconds)
    return last_heartbeat_at + timedelta(seconds=thresholds.dormant_seconds)


def clamp(at: datetime, *, earliest: datetime | None, latest: datetime) -> datetime:
    """`at` moved into [earliest, latest]: a transition never predates the state it ends."""
    if earliest is not None and at < earliest:
        at = earliest
    return min(at, latest)


@dataclass(frozen=True)
class Observed:
    """A runtime whose computed state differs from what the sweeper last stored."""

    runtime_id: str
    agent_id: str
    enrolled_at: datetime
    last_heartbeat_at: datetime | None
    health: Health
    drift: Drift
    drift_reason: str | None
    known: bool
    old_health: str | None
    old_drift: str | None
    health_since: datetime | None
    drift_since: datetime | None


def changed_states(
    session: Session,
    *,
    workspace: Workspace,
    rules: FleetRules,
    now: datetime,
    after: str | None = None,
    limit: int | None = None,
) -> list[Observed]:
    """Visible runtimes of the workspace whose health or drift differs from the stored state.

    In runtime id order; `after` and `limit` read them a chunk at a time.
    """
    context = lifecycle.rule_context(rules, now=now, desired_config_hash=workspace.config_hash)
    current = (
        select(
            Runtime.id.label("runtime_id"),
            Runtime.agent_id.label("agent_id"),
            Runtime.enrolled_at.label("enrolled_at"),
            Runtime.last_heartbeat_at.label("last_heartbeat_at"),
            health_expression(context).label("health"),
            drift_expression(context).label("drift"),
            drift_reason_expression(context).label("drift_reason"),
        )
        .where(Runtime.workspace_id == workspace.id, lifecycle.visible_clause())
        .where(Runtime.id > after if after is not None else true())
        .subquery()
    )
    rows = session.execute(
        select(
            current,
            RuntimeState.runtime_id.label("known"),
            RuntimeState.health.label("old_health"),
            RuntimeState.drift.label("old_drift"),
            RuntimeState.health_since,
            RuntimeState.drift_since,
        )
        .select_from(current)
        .outerjoin(RuntimeState, RuntimeState.runtime_id == current.c.runtime_id)
        .where(
            or_(
                RuntimeState.runtime_id.is_(None),
                RuntimeState.health != current.c.health,
                RuntimeState.drift != current.c.drift,
            )
        )
        .order_by(current.c.runtime_id)
        .limit(limit)
    ).all()
    return [
        Observed(
            runtime_id=row.runtime_id,
            agent_id=row.agent_id,
            enrolled_at=row.enrolled_at,
            last_heartbeat_at=row.last_heartbeat_at,
            health=Health(row.health),
            drift=Drift(row.drift),
            drift_reason=row.drift_reason,
            known=row.known is not None,
            old_health=row.old_health,
            old_drift=row.old_drift,
            health_since=row.health_since,
            drift_since=row.drift_since,
        )
        for row in rows
    ]


def _transition(
    workspace: Workspace,
    runtime_id: str,
    kind: TransitionKind,
    change: tuple[str | None, str],
    *,
    reason: str | None = None,
    at: datetime,
    now: datetime,
) -> RuntimeTransition:
    old, new = change
    return RuntimeTransition(
        runtime_id=runtime_id,
        workspace_id=workspace.id,
        kind=kind.value,
        from_state=old,
        to_state=new,
        reason=reason,
        at=at,
        detected_at=now,
    )


def record_changes(
    session: Session,
    *,
    workspace: Workspace,
    observed: list[Observed],
    thresholds: HealthThresholds,
    hooks: list[Webhook],
    now: datetime,
) -> list[RuntimeTransition]:
    """Store a transition per changed dimension, move the stored states on, queue the alerts.

    A runtime seen for the first time gets transitions from nothing (its history starts
    there) and no alert.
    """
    first_seen: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    transitions: list[RuntimeTransition] = []
    alerting: list[tuple[RuntimeTransition, str]] = []
    for item in observed:
        health_at = clamp(
            health_changed_at(
                item.health,
                last_heartbeat_at=item.last_heartbeat_at,
                enrolled_at=item.enrolled_at,
                thresholds=thresholds,
            ),
            earliest=item.health_since,
            latest=now,
        )
        drift_at = item.enrolled_at if item.drift is Drift.AWAITING_SYNC and not item.known else now
        drift_at = clamp(drift_at, earliest=item.drift_since, latest=now)
        state = {
            "runtime_id": item.runtime_id,
            "health": item.health.value,
            "drift": item.drift.value,
            "drift_reason": item.drift_reason,
            "swept_at": now,
        }
        if not item.known:
            first_seen.append(
                {
                    **state,
                    "workspace_id": workspace.id,
                    "health_since": health_at,
                    "drift_since": drift_at,
                }
            )
        else:
            state["health_since"] = (
                health_at if item.old_health != item.health else item.health_since
            )
            state["drift_since"] = drift_at if item.old_drift != item.drift else item.drift_since
            moved.append(state)
        if item.old_health != item.health:
            transition = _transition(
                workspace,
                item.runtime_id,
                TransitionKind.HEALTH,
                (item.old_health, item.health.value),
                at=health_at,
                now=now,
            )
            transitions.append(transition)
            if item.known:
                alerting.append((transition, item.agent_id))
        if item.old_drift != item.drift:
            transition = _transition(
                workspace,
                item.runtime_id,
                TransitionKind.DRIFT,
                (item.old_drift, item.drift.value),
                reason=item.drift_reason,
                at=drift_at,
                now=now,
            )
            transitions.append(transition)
            if item.known:
                alerting.append((transition, item.agent_id))
    if first_seen:
        session.execute(insert(RuntimeState), first_seen)
    if moved:
        session.execute(update(RuntimeState), moved)
    session.add_all(transitions)
    session.flush()
    for transition, agent_id in alerting:
        _alert(session, workspace, transition, agent_id, hooks, now)
    return transitions


def record_lifecycle(
    session: Session,
    *,
    workspace: Workspace,
    changes: list[LifecycleChange],
    archived: bool,
    hooks: list[Webhook],
    rules: FleetRules,
    retention: lifecycle.Retention,
    now: datetime,
) -> list[RuntimeTransition]:
    """A life-cycle transition per archived or returned runtime, each alerted once."""
    transitions = []
    for change in changes:
        if archived:
            # The moment it had been dormant for `archive_after`.
            dormant_since = health_changed_at(
                Health.DORMANT,
                last_heartbeat_at=change.last_heartbeat_at,
                enrolled_at=now,
                thresholds=rules.thresholds,
            )
            at = min(dormant_since + retention.archive_after, now)
            old, new = ACTIVE, ARCHIVED
        else:
            at = min(change.last_heartbeat_at or now, now)
            old, new = ARCHIVED, ACTIVE
        transitions.append(
            _transition(
                workspace, change.runtime_id, TransitionKind.LIFECYCLE, (old, new), at=at, now=now
            )
        )
    session.add_all(transitions)
    session.flush()
    for transition, change in zip(transitions, changes, strict=True):
        _alert(session, workspace, transition, change.agent_id, hooks, now)
    return transitions


def _alert(
    session: Session,
    workspace: Workspace,
    transition: RuntimeTransition,
    agent_id: str,
    hooks: list[Webhook],
    now: datetime,
) -> None:
    kind = TransitionKind(transition.kind)
    if kind is TransitionKind.LIFECYCLE:
        event = AlertEvent.ARCHIVED if transition.to_state == ARCHIVED else AlertEvent.UNARCHIVED
    else:
        event = EVENT_OF_KIND[kind]
    webhooks.enqueue(
        session,
        webhooks=hooks,
        workspace=workspace,
        event=event,
        event_id=f"tr_{transition.id}",
        data={
            "runtimeId": transition.runtime_id,
            "agentId": agent_id,
            **transition_view(transition),
        },
        now=now,
    )


def transition_view(transition: RuntimeTransition) -> dict[str, Any]:
    """A transition as the API and webhooks show it."""
    return {
        "id": transition.id,
        "kind": transition.kind,
        "from": transition.from_state,
        "to": transition.to_state,
        "reason": transition.reason,
        "at": webhooks.iso(transition.at),
        "detectedAt": webhooks.iso(transition.detected_at),
    }


def runtime_history(
    session: Session,
    *,
    workspace: Workspace,
    runtime_id: str,
    kind: str | None,
    limit: int,
    before_id: int | None,
    now: datetime,
) -> tuple[Runtime, RuntimeState | None, list[dict[str, Any]]]:
    """A runtime's transitions, newest first, each with how long the state it began lasted."""
    if kind is not None and kind not in {k.value for k in TransitionKind}:
        raise Invalid(
            f"kind must be one of {', '.join(k.value for k in TransitionKind)}",
            code="invalid_kind_filter",
        )
    runtime = session.scalar(
        select(Runtime).where(Runtime.id == runtime_id, Runtime.workspace_id == workspace.id)
    )
    if runtime is None:
        raise NotFound("runtime not found")
    later = aliased(RuntimeTransition)
    ended_at = (
        select(func.min(later.at))
        .where(
            later.runtime_id == RuntimeTransition.runtime_id,
            later.kind == RuntimeTransition.kind,
            later.id > RuntimeTransition.id,
        )
        .correlate(RuntimeTransition)
        .scalar_subquery()
    )
    query = select(RuntimeTransition, ended_at).where(RuntimeTransition.runtime_id == runtime.id)
    if kind is not None:
        query = query.where(RuntimeTransition.kind == kind)
    if before_id is not None:
        query = query.where(RuntimeTransition.id < before_id)
    rows = session.execute(query.order_by(RuntimeTransition.id.desc()).limit(limit)).all()
    items = []
    for transition, until in rows:
        end = until if until is not None else now
        items.append(
            {
                **transition_view(transition),
                "until": webhooks.iso(until),
                "durationSeconds": max(int((end - transition.at).total_seconds()), 0),
                "ongoing": until is None,
            }
        )
    return runtime, session.get(RuntimeState, runtime.id), items
