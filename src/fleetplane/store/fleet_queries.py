"""The fleet rules of `domain.fleet` written as SQL, so filters and summaries run in the database.

`tests/store/test_fleet_queries.py` holds these expressions to the pure rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)

from fleetplane.domain.fleet import Drift, DriftReason, Health, HealthThresholds
from fleetplane.domain.versions import Compatibility, version_sort_key
from fleetplane.store.models import Runtime, RuntimeEvent

WORKSPACE_WARNING = "workspace_warning"
State = TypeVar("State", Health, Drift)


def _enum_value(state: Health | Drift) -> str:
    return state.value


@dataclass(frozen=True)
class RuleContext:
    """What the SQL rules need: the server's now, thresholds, versions and the desired hash."""

    now: datetime
    thresholds: HealthThresholds
    minimum_version: str
    full_sync_version: str
    desired_config_hash: str


def _health_rows(context: RuleContext) -> list[tuple[ColumnElement[bool], Health]]:
    """SPEC 3.1 as (condition, health) rows, the first match winning; dormant otherwise."""
    connected_after = context.now - timedelta(seconds=context.thresholds.connected_seconds)
    dormant_before = context.now - timedelta(seconds=context.thresholds.dormant_seconds)
    last = Runtime.last_heartbeat_at
    return [
        (last.is_(None), Health.NEVER),
        (last > connected_after, Health.CONNECTED),
        (last >= dormant_before, Health.STALE),
    ]


def _first_match(
    rows: Sequence[tuple[ColumnElement[bool], State]],
    otherwise: State,
    value: Callable[[State], str | int],
) -> ColumnElement[Any]:
    """A CASE over `rows` (the first matching condition wins) giving `value` of its state."""
    return case(
        *((condition, literal(value(state))) for condition, state in rows),
        else_=literal(value(otherwise)),
    )


def health_expression(context: RuleContext) -> ColumnElement[str]:
    """SQL for SPEC 3.1: connected below the first threshold, stale up to and at the second."""
    return _first_match(_health_rows(context), Health.DORMANT, _enum_value)


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
    context: RuleContext, desired: SQLColumnExpression[str] | None = None
) -> list[tuple[ColumnElement[bool], Drift, DriftReason | None]]:
    """SPEC 3.4 as (condition, drift, reason) rows, the first match winning; aligned otherwise.

    The desired hash is the context's, or `desired` (a column: each runtime's own workspace's).
    """
    key = Runtime.version_key
    below_minimum = and_(key.is_not(None), key < version_sort_key(context.minimum_version))
    below_full = and_(key.is_not(None), key < version_sort_key(context.full_sync_version))
    if desired is None:
        desired = literal(context.desired_config_hash)
    observed = Runtime.observed_config_hash
    return [
        (Runtime.last_heartbeat_at.is_(None), Drift.AWAITING_SYNC, DriftReason.NO_HEARTBEAT),
        (below_minimum, Drift.UPGRADE_REQUIRED, DriftReason.VERSION_BELOW_MINIMUM),
        (Runtime.apply_failed_hash == desired, Drift.NEEDS_RECONCILE, DriftReason.APPLY_FAILED),
        (observed.is_(None), Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_UNREPORTED),
        (observed != desired, Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_DIFFERS),
        (below_full, Drift.NEEDS_RECONCILE, DriftReason.VERSION_BELOW_FULL_SYNC),
    ]


def drift_expression(
    context: RuleContext, desired: SQLColumnExpression[str] | None = None
) -> ColumnElement[str]:
    """SQL for SPEC 3.4's drift: the first matching row wins, as in `domain.fleet.drift`.

    `desired` replaces the context's desired hash with a column (see `_drift_rows`).
    """
    rows = [(condition, drift) for condition, drift, _ in _drift_rows(context, desired)]
    return _first_match(rows, Drift.ALIGNED, _enum_value)


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


@dataclass(frozen=True)
class StateCounts:
    """How many runtimes a selection holds per health, per drift, and on the desired hash."""

    health: dict[Health, int]
    drift: dict[Drift, int]
    on_desired: int


def state_counts_query(context: RuleContext, clauses: list[ColumnElement[bool]]) -> Select[Any]:
    """One row of conditional sums over the runtimes `clauses` select; `state_counts` reads it.

    One pass with no GROUP BY: SQLite groups by sorting every row, which was most of the
    summary's time in a 100,000-runtime workspace (`docs/benchmarks.md`). Each state but the
    rules' fallback (dormant, aligned) is a sum of the rules' own first-match CASE, giving 1
    for that state; the fallback is the rest of the total.
    """
    drift_rows = [(condition, drift) for condition, drift, _ in _drift_rows(context)]

    def count_of(
        rows: Sequence[tuple[ColumnElement[bool], State]], otherwise: State, state: State
    ) -> Any:
        return func.coalesce(func.sum(_first_match(rows, otherwise, lambda s: int(s is state))), 0)

    on_desired = case((Runtime.observed_config_hash == context.desired_config_hash, 1), else_=0)
    return select(
        func.count(),
        *(count_of(_health_rows(context), Health.DORMANT, h) for h in _COUNTED_HEALTH),
        *(count_of(drift_rows, Drift.ALIGNED, d) for d in _COUNTED_DRIFT),
        func.coalesce(func.sum(on_desired), 0),
    ).where(*clauses)


_COUNTED_HEALTH: tuple[Health, ...] = tuple(h for h in Health if h is not Health.DORMANT)
_COUNTED_DRIFT: tuple[Drift, ...] = tuple(d for d in Drift if d is not Drift.ALIGNED)


def state_counts(row: Sequence[Any]) -> StateCounts:
    """Read the row of `state_counts_query`."""
    total, *rest = (int(value) for value in row)
    health: dict[Health, int] = dict(
        zip(_COUNTED_HEALTH, rest[: len(_COUNTED_HEALTH)], strict=True)
    )
    drift: dict[Drift, int] = dict(
        zip(_COUNTED_DRIFT, rest[len(_COUNTED_HEALTH) : -1], strict=True)
    )
    health[Health.DORMANT] = total - sum(health.values())
    drift[Drift.ALIGNED] = total - sum(drift.values())
    return StateCounts(health=health, drift=drift, on_desired=rest[-1])
