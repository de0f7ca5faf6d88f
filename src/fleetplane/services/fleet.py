"""The fleet surface's reads (SPEC 4.3): the runtime inventory, its summary, the desired state."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Invalid
from fleetplane.domain.fleet import Drift, FleetSummary, Health, HealthThresholds
from fleetplane.domain.policy import active_policies
from fleetplane.services.lifecycle import archived_count, is_archived, visible_clause
from fleetplane.services.workspaces import DesiredState
from fleetplane.store.fleet_queries import (
    RuleContext,
    compatibility_expression,
    drift_expression,
    drift_reason_expression,
    fleet_filters,
    health_expression,
    state_counts,
    state_counts_query,
    warnings_since,
)
from fleetplane.store.models import ConfigRevision, Runtime

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
WARNING_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class FleetRules:
    """The settings the fleet rules depend on."""

    thresholds: HealthThresholds
    minimum_version: str
    full_sync_version: str


def encode_cursor(values: list[Any]) -> str:
    """An opaque cursor for keyset pagination."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, length: int) -> list[Any]:
    """The values in a cursor made by `encode_cursor`, or Invalid."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid("cursor is not one this server issued", code="invalid_cursor") from exc
    if not isinstance(values, list) or len(values) != length:
        raise Invalid("cursor is not one this server issued", code="invalid_cursor")
    if not all(isinstance(value, str | int) for value in values):
        raise Invalid("cursor is not one this server issued", code="invalid_cursor")
    # A number no database column holds (SQLite and PostgreSQL stop at 64 bits).
    if any(isinstance(value, int) and not -(2**63) <= value < 2**63 for value in values):
        raise Invalid("cursor is not one this server issued", code="invalid_cursor")
    return values


def check_limit(limit: int | None) -> int:
    """A page size between 1 and 1000, 100 by default."""
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit must be between 1 and 1000", code="invalid_limit")
    return limit


def _check_states(values: list[str] | None, allowed: type[Health] | type[Drift], name: str) -> None:
    for value in values or []:
        if value not in {member.value for member in allowed}:
            raise Invalid(
                f"{name} must be one of {', '.join(m.value for m in allowed)}",
                code=f"invalid_{name}_filter",
                details={"value": value},
            )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def fleet_page(
    session: Session,
    *,
    desired: DesiredState,
    rules: FleetRules,
    now: datetime,
    health: list[str] | None,
    drift: list[str] | None,
    text: str | None,
    limit: int | None,
    cursor: str | None,
    include_archived: bool = False,
) -> dict[str, Any]:
    """One page of the fleet inventory with the summary of everything the filters select."""
    page_size = check_limit(limit)
    _check_states(health, Health, "health")
    _check_states(drift, Drift, "drift")
    context = RuleContext(
        now=now,
        thresholds=rules.thresholds,
        minimum_version=rules.minimum_version,
        full_sync_version=rules.full_sync_version,
        desired_config_hash=desired.config_hash,
    )
    clauses = fleet_filters(
        context, workspace_id=desired.workspace_id, health=health, drift=drift, text=text
    )
    if not include_archived:
        clauses.append(visible_clause())
    counts = state_counts(session.execute(state_counts_query(context, clauses)).one())
    summary = FleetSummary.from_counts(counts.health, counts.drift)
    on_current = counts.on_desired
    page_clauses = list(clauses)
    if cursor:
        after_agent, after_id = decode_cursor(cursor, length=2)
        page_clauses.append(
            or_(
                Runtime.agent_id > after_agent,
                and_(Runtime.agent_id == after_agent, Runtime.id > after_id),
            )
        )
    query = (
        select(
            Runtime,
            health_expression(context),
            compatibility_expression(context),
            drift_expression(context),
            drift_reason_expression(context),
            warnings_since(now - WARNING_WINDOW),
        )
        .where(*page_clauses)
        .order_by(Runtime.agent_id, Runtime.id)
        .limit(page_size + 1)
    )
    rows = session.execute(query).all()
    more = len(rows) > page_size
    rows = rows[:page_size]
    revision_numbers = _revision_numbers(session, desired.workspace_id, [r[0] for r in rows])
    runtimes = []
    for runtime, health_value, compat, drift_value, reason, warnings in rows:
        age = (
            (now - runtime.last_heartbeat_at).total_seconds() if runtime.last_heartbeat_at else None
        )
        runtimes.append(
            {
                "id": runtime.id,
                "agentId": runtime.agent_id,
                "hostId": runtime.host_id,
                "labels": runtime.labels or {},
                "version": runtime.version,
                "compatibility": compat,
                "health": health_value,
                "lastHeartbeatAt": _iso(runtime.last_heartbeat_at),
                "heartbeatAgeSeconds": int(age) if age is not None else None,
                "drift": drift_value,
                "driftReason": reason,
                "applyFailedMessage": runtime.apply_failed_message
                if reason == "apply_failed"
                else None,
                "observedConfigHash": runtime.observed_config_hash,
                "observedConfigRevision": revision_numbers.get(runtime.observed_config_hash or ""),
                "revisionsBehind": _behind(
                    desired.config_revision,
                    revision_numbers.get(runtime.observed_config_hash or ""),
                    runtime.observed_config_hash == desired.config_hash,
                ),
                "enrolledAt": _iso(runtime.enrolled_at),
                "archivedAt": _iso(runtime.archived_at) if is_archived(runtime) else None,
                "lastSessionId": runtime.last_session_id,
                "warnings24h": warnings,
            }
        )
    last = rows[-1][0] if rows and more else None
    return {
        "workspaceId": desired.workspace_id,
        "generatedAt": _iso(now),
        "runtimes": runtimes,
        "summary": {
            **summary.to_api(),
            "archived": archived_count(session, workspace_id=desired.workspace_id),
        },
        "desiredState": desired_state_view(desired),
        "rollout": {
            "revision": desired.config_revision,
            "onRevision": on_current,
            "expected": summary.total,
            "startedAt": _iso(desired.config_updated_at),
            "runningSeconds": int((now - desired.config_updated_at).total_seconds()),
        },
        "nextCursor": encode_cursor([last.agent_id, last.id]) if last is not None else None,
    }


def _behind(current: int, observed: int | None, on_current: bool) -> int | None:
    """How many revisions a runtime trails the desired one (None when its hash is unknown)."""
    if on_current:
        return 0
    if observed is None:
        return None
    return max(current - observed, 0)


def _revision_numbers(
    session: Session, workspace_id: str, runtimes: list[Runtime]
) -> dict[str, int]:
    """The newest revision number of each observed hash on the page (a revert reuses a hash)."""
    hashes = {r.observed_config_hash for r in runtimes if r.observed_config_hash}
    if not hashes:
        return {}
    numbers: dict[str, int] = {}
    for digest, number in session.execute(
        select(ConfigRevision.hash, ConfigRevision.number).where(
            ConfigRevision.workspace_id == workspace_id, ConfigRevision.hash.in_(hashes)
        )
    ):
        numbers[digest] = max(number, numbers.get(digest, 0))
    return numbers


def desired_state_view(desired: DesiredState) -> dict[str, Any]:
    """The `desiredState` block of the fleet response."""
    return {
        "configRevision": {
            "number": desired.config_revision,
            "hash": desired.config_hash,
            "updatedAt": _iso(desired.config_updated_at),
        },
        "policyMode": desired.policy_mode,
        "policyRevision": desired.policy_revision,
        "devOverrideUntil": _iso(desired.dev_override_until),
    }


def fleet_config(desired: DesiredState, *, rules: FleetRules) -> dict[str, Any]:
    """The `fleet/config` document: where and what runtimes pull (SPEC 4.3)."""
    effective = desired.effective_policy
    return {
        "workspaceId": desired.workspace_id,
        "orgId": desired.org_id,
        "distribution_mode": "always_pull",
        "config_path": "/api/v1/config",
        "policies_path": "/api/v1/policies",
        "configRevision": {"number": desired.config_revision, "hash": desired.config_hash},
        "policyMode": desired.policy_mode,
        "policyRevision": desired.policy_revision,
        "defaultDecision": effective.default_decision,
        "activePolicies": active_policies(desired.org_policy, desired.workspace_policy),
        "compatibility": {
            "minimumVersion": rules.minimum_version,
            "fullSyncVersion": rules.full_sync_version,
        },
    }
