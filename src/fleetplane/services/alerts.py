"""Workspace alert thresholds: aligned share below X %, dormant share above Y %, any runtime
needing an upgrade. The sweeper evaluates them; each crossing (firing, then resolved) is
recorded once and alerted once, never once per sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Invalid
from fleetplane.domain.fleet import FleetSummary
from fleetplane.services import audit, webhooks
from fleetplane.services.webhooks import AlertEvent
from fleetplane.store.models import ThresholdCrossing, Webhook, Workspace, WorkspaceAlertRules


class Threshold(StrEnum):
    """The workspace thresholds."""

    ALIGNED_SHARE = "aligned_share"
    DORMANT_SHARE = "dormant_share"
    UPGRADE_REQUIRED = "upgrade_required"


EVENT_OF = {
    Threshold.ALIGNED_SHARE: AlertEvent.ALIGNED_SHARE,
    Threshold.DORMANT_SHARE: AlertEvent.DORMANT_SHARE,
    Threshold.UPGRADE_REQUIRED: AlertEvent.UPGRADE_REQUIRED,
}
FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Thresholds:
    """A workspace's thresholds; None (or False) switches one off."""

    aligned_share_below: float | None = None
    dormant_share_above: float | None = None
    upgrade_required: bool = False


@dataclass(frozen=True)
class Evaluation:
    """One threshold against a summary: crossed or not, the measured value and the limit."""

    threshold: Threshold
    crossed: bool
    value: float
    limit: float | None


def share(part: int, total: int) -> float:
    """`part` as a percentage of `total` (0 for an empty fleet)."""
    return 100.0 * part / total if total else 0.0


def evaluate(thresholds: Thresholds, summary: FleetSummary) -> list[Evaluation]:
    """Every threshold against a fleet summary. An empty fleet crosses no share threshold."""
    aligned = share(summary.aligned, summary.total)
    dormant = share(summary.dormant, summary.total)
    aligned_limit, dormant_limit = thresholds.aligned_share_below, thresholds.dormant_share_above
    return [
        Evaluation(
            Threshold.ALIGNED_SHARE,
            aligned_limit is not None and summary.total > 0 and aligned < aligned_limit,
            aligned,
            aligned_limit,
        ),
        Evaluation(
            Threshold.DORMANT_SHARE,
            dormant_limit is not None and summary.total > 0 and dormant > dormant_limit,
            dormant,
            dormant_limit,
        ),
        Evaluation(
            Threshold.UPGRADE_REQUIRED,
            thresholds.upgrade_required and summary.upgrade_required > 0,
            float(summary.upgrade_required),
            0.0 if thresholds.upgrade_required else None,
        ),
    ]


def _check_percent(value: float | None, name: str) -> float | None:
    if value is not None and not 0 <= value <= 100:
        raise Invalid(f"{name} must be between 0 and 100", code="invalid_threshold")
    return value


def get_rules(session: Session, *, workspace_id: str) -> WorkspaceAlertRules | None:
    """The workspace's threshold row, if thresholds were ever set."""
    return session.get(WorkspaceAlertRules, workspace_id)


def thresholds_of(rules: WorkspaceAlertRules | None) -> Thresholds:
    """The thresholds a row holds (all off without one)."""
    if rules is None:
        return Thresholds()
    return Thresholds(rules.aligned_share_below, rules.dormant_share_above, rules.upgrade_required)


def put_thresholds(
    session: Session, *, workspace: Workspace, thresholds: Thresholds, actor: str, now: datetime
) -> WorkspaceAlertRules:
    """Replace the workspace's thresholds; the next sweep alerts on any crossing they cause."""
    _check_percent(thresholds.aligned_share_below, "alignedShareBelow")
    _check_percent(thresholds.dormant_share_above, "dormantShareAbove")
    rules = session.get(WorkspaceAlertRules, workspace.id, with_for_update=True)
    if rules is None:
        rules = WorkspaceAlertRules(
            workspace_id=workspace.id,
            aligned_firing=False,
            dormant_firing=False,
            upgrade_firing=False,
        )
        session.add(rules)
    rules.aligned_share_below = thresholds.aligned_share_below
    rules.dormant_share_above = thresholds.dormant_share_above
    rules.upgrade_required = thresholds.upgrade_required
    rules.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="alerts.thresholds",
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return rules


def firing_state(rules: WorkspaceAlertRules) -> dict[Threshold, bool]:
    """Which thresholds were crossed at the last sweep."""
    return {
        Threshold.ALIGNED_SHARE: rules.aligned_firing,
        Threshold.DORMANT_SHARE: rules.dormant_firing,
        Threshold.UPGRADE_REQUIRED: rules.upgrade_firing,
    }


def _set_firing(rules: WorkspaceAlertRules, threshold: Threshold, firing: bool) -> None:
    if threshold is Threshold.ALIGNED_SHARE:
        rules.aligned_firing = firing
    elif threshold is Threshold.DORMANT_SHARE:
        rules.dormant_firing = firing
    else:
        rules.upgrade_firing = firing


def record_crossings(
    session: Session,
    *,
    workspace: Workspace,
    rules: WorkspaceAlertRules,
    summary: FleetSummary,
    hooks: list[Webhook],
    now: datetime,
) -> list[ThresholdCrossing]:
    """Compare the thresholds with the summary; record and alert each change of state once."""
    was = firing_state(rules)
    crossings = []
    for evaluation in evaluate(thresholds_of(rules), summary):
        if evaluation.crossed == was[evaluation.threshold]:
            continue
        _set_firing(rules, evaluation.threshold, evaluation.crossed)
        crossing = ThresholdCrossing(
            workspace_id=workspace.id,
            threshold=evaluation.threshold.value,
            state=FIRING if evaluation.crossed else RESOLVED,
            value=evaluation.value,
            threshold_value=evaluation.limit,
            at=now,
        )
        session.add(crossing)
        crossings.append(crossing)
    if not crossings:
        return []
    session.flush()
    for crossing in crossings:
        webhooks.enqueue(
            session,
            webhooks=hooks,
            workspace=workspace,
            event=EVENT_OF[Threshold(crossing.threshold)],
            event_id=f"tc_{crossing.id}",
            data={**crossing_view(crossing), "summary": summary.to_api()},
            now=now,
        )
    return crossings


def crossing_view(crossing: ThresholdCrossing) -> dict[str, Any]:
    """A threshold crossing as the API and webhooks show it."""
    return {
        "id": crossing.id,
        "threshold": crossing.threshold,
        "state": crossing.state,
        "value": round(crossing.value, 3),
        "limit": crossing.threshold_value,
        "at": webhooks.iso(crossing.at),
    }


def thresholds_view(rules: WorkspaceAlertRules | None) -> dict[str, Any]:
    """The thresholds and which are crossed, as the API shows them."""
    thresholds = thresholds_of(rules)
    firing = firing_state(rules) if rules is not None else {}
    return {
        "alignedShareBelow": thresholds.aligned_share_below,
        "dormantShareAbove": thresholds.dormant_share_above,
        "upgradeRequired": thresholds.upgrade_required,
        "firing": sorted(t.value for t, on in firing.items() if on),
        "updatedAt": webhooks.iso(rules.updated_at) if rules is not None else None,
    }


def list_crossings(
    session: Session, *, workspace: Workspace, limit: int, before_id: int | None
) -> list[ThresholdCrossing]:
    """The workspace's threshold crossings, newest first."""
    query = select(ThresholdCrossing).where(ThresholdCrossing.workspace_id == workspace.id)
    if before_id is not None:
        query = query.where(ThresholdCrossing.id < before_id)
    return list(session.scalars(query.order_by(ThresholdCrossing.id.desc()).limit(limit)))
