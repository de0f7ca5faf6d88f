"""The Observe dashboard's reads (SPEC 5): rollout posture across workspaces, one workspace's page.

Posture counts for every visible workspace come from one grouped query (SPEC 3.5). It evaluates
the same health and drift rules as `store.fleet_queries`, except that the desired hash is each
runtime's own workspace's `config_hash` column rather than one literal, so that a single
statement covers many workspaces; `tests/store/test_observe.py` holds the two equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from fleetplane.domain.fleet import Drift, FleetSummary, Health
from fleetplane.services import access, audit, credentials, fleet
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level
from fleetplane.services.lifecycle import visible_clause
from fleetplane.services.workspaces import DEV_OVERRIDE, DesiredState
from fleetplane.store.fleet_queries import RuleContext, drift_expression, health_expression
from fleetplane.store.models import AuditEntry, ConfigRevision, Org, Runtime, User, Workspace

OBSERVE_PAGE_SIZE = 50
MAX_OBSERVE_PAGE_SIZE = 500
RUNTIME_PAGE_SIZE = 50
HISTORY_ROWS = 20
AUDIT_ROWS = 50


@dataclass(frozen=True)
class PostureCounts:
    """One workspace's SPEC 3.5 summary and its rollout: runtimes on the current revision."""

    summary: FleetSummary = field(default_factory=FleetSummary)
    on_current: int = 0


# The states each count covers, in the order the posture query returns them.
HEALTH_STATES = (Health.CONNECTED, Health.STALE, Health.DORMANT, Health.NEVER)
DRIFT_STATES = (Drift.ALIGNED, Drift.NEEDS_RECONCILE, Drift.UPGRADE_REQUIRED, Drift.AWAITING_SYNC)


def posture_query(
    *, rules: fleet.FleetRules, now: datetime, workspace_ids: list[str] | None
) -> Select[Any]:
    """Runtime counts per workspace and state for the given workspaces (None: every one).

    One statement: each runtime's health and drift (SPEC 3.1, 3.4, its own workspace's
    desired hash) and whether it reports that hash computed once in a subquery, then GROUP BY
    workspace with one count per state and the count on the current revision. Grouping by
    workspace alone keeps the groups few, so PostgreSQL aggregates in a hash table instead
    of sorting every runtime on computed text keys; `OFFSET 0` keeps both
    databases from inlining the subquery and so evaluating each CASE once per count.
    """
    context = RuleContext(
        now=now,
        thresholds=rules.thresholds,
        minimum_version=rules.minimum_version,
        full_sync_version=rules.full_sync_version,
        desired_config_hash="",  # unused by health; drift reads each workspace's own hash
    )
    drift = drift_expression(context, desired=Workspace.config_hash)
    states_query = (
        select(
            Runtime.workspace_id.label("workspace_id"),
            health_expression(context).label("health"),
            drift.label("drift"),
            case((Runtime.observed_config_hash == Workspace.config_hash, 1), else_=0).label(
                "on_current"
            ),
        )
        .join(Workspace, Workspace.id == Runtime.workspace_id)
        .where(visible_clause())
    )
    if workspace_ids is not None:
        states_query = states_query.where(Runtime.workspace_id.in_(workspace_ids))
    states = states_query.offset(0).subquery()
    counts = [func.count().filter(states.c.health == state.value) for state in HEALTH_STATES]
    counts += [func.count().filter(states.c.drift == state.value) for state in DRIFT_STATES]
    counts.append(func.count().filter(states.c.on_current == 1))
    return select(states.c.workspace_id, *counts).group_by(states.c.workspace_id)


def posture_summaries(
    session: Session, *, rules: fleet.FleetRules, now: datetime, workspace_ids: list[str]
) -> dict[str, PostureCounts]:
    """The SPEC 3.5 summary and rollout count of each given workspace (empty ones get zeros)."""
    summaries = dict.fromkeys(workspace_ids, PostureCounts())
    if not workspace_ids:
        return summaries
    every = session.scalar(select(func.count()).select_from(Workspace)) or 0
    wanted = set(workspace_ids)
    query = posture_query(
        rules=rules,
        now=now,
        # Seeing every workspace needs no filter; rows of any created since are dropped below.
        workspace_ids=None if len(wanted) >= every else workspace_ids,
    )
    for workspace_id, *state_counts in session.execute(query):
        if workspace_id not in wanted:
            continue
        connected, stale, dormant, never, aligned, reconcile, upgrade, awaiting, on_current = map(
            int, state_counts
        )
        summary = FleetSummary(
            total=connected + stale + dormant + never,
            active=connected,
            stale=stale,
            dormant=dormant,
            never=never,
            aligned=aligned,
            needs_reconcile=reconcile,
            upgrade_required=upgrade,
            awaiting_sync=awaiting,
        )
        summaries[workspace_id] = PostureCounts(summary=summary, on_current=on_current)
    return summaries


def needs_attention(summary: FleetSummary) -> bool:
    """A workspace needs attention when any runtime is not aligned, stale or dormant."""
    return summary.aligned < summary.total or summary.stale > 0 or summary.dormant > 0


def aligned_share(summary: FleetSummary) -> float | None:
    """The share of runtimes aligned, 0..1, or None for a workspace without runtimes."""
    return summary.aligned / summary.total if summary.total else None


def add_summaries(summaries: list[FleetSummary]) -> FleetSummary:
    """The counts of several summaries added together."""
    return FleetSummary(
        total=sum(s.total for s in summaries),
        active=sum(s.active for s in summaries),
        stale=sum(s.stale for s in summaries),
        dormant=sum(s.dormant for s in summaries),
        never=sum(s.never for s in summaries),
        aligned=sum(s.aligned for s in summaries),
        needs_reconcile=sum(s.needs_reconcile for s in summaries),
        upgrade_required=sum(s.upgrade_required for s in summaries),
        awaiting_sync=sum(s.awaiting_sync for s in summaries),
    )


@dataclass(frozen=True)
class WorkspacePosture:
    """One row of the Observe page."""

    workspace_id: str
    name: str
    org_id: str
    policy_mode: str
    dev_override_until: datetime | None
    config_revision: int
    config_hash: str
    config_updated_at: datetime
    summary: FleetSummary
    # Runtimes reporting the current revision's hash, out of `summary.total` expected.
    on_current: int = 0

    @property
    def rollout_share(self) -> float | None:
        """The share of this workspace's runtimes on its current config revision."""
        return self.on_current / self.summary.total if self.summary.total else None

    def rollout_seconds(self, now: datetime) -> int:
        """How long the current revision has been rolling out."""
        return max(int((now - self.config_updated_at).total_seconds()), 0)

    @property
    def aligned_share(self) -> float | None:
        """The share of this workspace's runtimes that are aligned."""
        return aligned_share(self.summary)

    @property
    def needs_attention(self) -> bool:
        """Whether any runtime here is not aligned, stale or dormant."""
        return needs_attention(self.summary)


@dataclass(frozen=True)
class OrgPostures:
    """The rows of one org on the current page."""

    org_id: str
    org_name: str
    rows: list[WorkspacePosture]


@dataclass(frozen=True)
class ObserveView:
    """The Observe page: filtered rows, their totals, and the page being shown."""

    orgs: list[tuple[str, str]]
    groups: list[OrgPostures]
    totals: FleetSummary
    # Runtimes on their own workspace's current revision, across every matching workspace.
    on_current: int
    matching: int
    visible: int
    page: int
    page_count: int
    page_size: int
    first_index: int
    overdue_overrides: list[str]

    @property
    def totals_aligned_share(self) -> float | None:
        """The share aligned across every matching workspace."""
        return aligned_share(self.totals)

    @property
    def totals_rollout_share(self) -> float | None:
        """The share of runtimes on their workspace's current revision, across every match."""
        return self.on_current / self.totals.total if self.totals.total else None


def overdue_overrides(workspaces: list[Workspace], *, now: datetime) -> list[str]:
    """Ids of the workspaces whose dev-override has expired but not yet lapsed."""
    return [
        w.id
        for w in workspaces
        if w.policy_mode == DEV_OVERRIDE
        and w.dev_override_until is not None
        and w.dev_override_until <= now
    ]


def lapse_overrides(session: Session, *, workspace_ids: list[str], now: datetime) -> None:
    """Return expired dev-overrides to their previous mode, with their audit rows (SPEC 3.7)."""
    for workspace_id in workspace_ids:
        workspace_service.lapse_dev_override(session, workspace_id=workspace_id, now=now)


def observe(
    session: Session,
    *,
    user: User,
    rules: fleet.FleetRules,
    now: datetime,
    org_id: str | None,
    attention_only: bool,
    page: int,
    page_size: int = OBSERVE_PAGE_SIZE,
) -> ObserveView:
    """Posture of every workspace the user can read, grouped by org, filtered and paged.

    Counts come from one grouped query over all visible workspaces, so totals and the
    attention filter cover every page, not only the one shown. Reads only: expired
    dev-overrides are listed in `overdue_overrides` for the caller to lapse and read again.
    """
    page_size = max(1, min(page_size, MAX_OBSERVE_PAGE_SIZE))
    everything = access.accessible_workspaces(session, user=user)
    org_names = dict(
        session.execute(
            select(Org.id, Org.name).where(Org.id.in_({w.org_id for w in everything}))
        ).all()
    )
    orgs = sorted(org_names.items(), key=lambda item: (item[1].lower(), item[0]))
    chosen = [w for w in everything if org_id is None or w.org_id == org_id]
    summaries = posture_summaries(
        session, rules=rules, now=now, workspace_ids=[w.id for w in chosen]
    )
    rows = [
        WorkspacePosture(
            workspace_id=w.id,
            name=w.name,
            org_id=w.org_id,
            policy_mode=w.policy_mode,
            dev_override_until=w.dev_override_until,
            config_revision=w.config_revision,
            config_hash=w.config_hash,
            config_updated_at=w.config_updated_at,
            summary=summaries[w.id].summary,
            on_current=summaries[w.id].on_current,
        )
        for w in chosen
    ]
    if attention_only:
        rows = [row for row in rows if row.needs_attention]
    rows.sort(key=lambda r: (org_names[r.org_id].lower(), r.org_id, r.name.lower(), r.workspace_id))
    page_count = max(1, math.ceil(len(rows) / page_size))
    page = max(1, min(page, page_count))
    start = (page - 1) * page_size
    groups: list[OrgPostures] = []
    for row in rows[start : start + page_size]:
        if not groups or groups[-1].org_id != row.org_id:
            groups.append(OrgPostures(row.org_id, org_names[row.org_id], []))
        groups[-1].rows.append(row)
    return ObserveView(
        orgs=orgs,
        groups=groups,
        totals=add_summaries([row.summary for row in rows]),
        on_current=sum(row.on_current for row in rows),
        matching=len(rows),
        visible=len(everything),
        page=page,
        page_count=page_count,
        page_size=page_size,
        first_index=start,
        overdue_overrides=overdue_overrides(everything, now=now),
    )


@dataclass(frozen=True)
class WorkspaceOverview:
    """Everything the workspace page shows, read in one transaction."""

    workspace: Workspace
    org_name: str
    level: Level
    desired: DesiredState
    fleet: dict[str, Any]
    config_document: Any
    revisions: list[ConfigRevision]
    audit: list[AuditEntry]
    connect_command: str
    generated_at: datetime
    overdue_overrides: list[str]

    @property
    def summary(self) -> FleetSummary:
        """The counts of the runtimes the filters select."""
        counts = self.fleet["summary"]
        return FleetSummary(
            total=counts["total"],
            active=counts["active"],
            stale=counts["stale"],
            dormant=counts["dormant"],
            never=counts["never"],
            aligned=counts["aligned"],
            needs_reconcile=counts["needsReconcile"],
            upgrade_required=counts["upgradeRequired"],
            awaiting_sync=counts["awaitingSync"],
        )

    @property
    def aligned_share(self) -> float | None:
        """The share of the selected runtimes that are aligned."""
        return aligned_share(self.summary)


def workspace_overview(
    session: Session,
    *,
    user: User,
    workspace_id: str,
    rules: fleet.FleetRules,
    now: datetime,
    public_url: str,
    health: list[str] | None = None,
    drift: list[str] | None = None,
    text: str | None = None,
    cursor: str | None = None,
    page_size: int = RUNTIME_PAGE_SIZE,
) -> WorkspaceOverview:
    """A workspace the user can read: runtimes (filtered, paged), desired state, history, audit.

    Reads only; an expired dev-override is named in `overdue_overrides`, as in `observe`.
    """
    workspace = access.require_workspace(
        session, user=user, workspace_id=workspace_id, level=Level.READ
    )
    desired = workspace_service.desired_state(session, workspace=workspace)
    inventory = fleet.fleet_page(
        session,
        desired=desired,
        rules=rules,
        now=now,
        health=health,
        drift=drift,
        text=text,
        limit=page_size,
        cursor=cursor,
    )
    return WorkspaceOverview(
        workspace=workspace,
        org_name=session.scalar(select(Org.name).where(Org.id == workspace.org_id)) or "",
        level=access.workspace_level(session, user=user, workspace=workspace),
        desired=desired,
        fleet=inventory,
        config_document=workspace_service.current_config(session, workspace=workspace).document,
        revisions=workspace_service.list_config_revisions(
            session, workspace=workspace, limit=HISTORY_ROWS, before_number=None
        ),
        audit=audit.list_for_workspace(
            session, workspace_id=workspace.id, limit=AUDIT_ROWS, before_seq=None
        ),
        connect_command=credentials.connect_command(
            public_url=public_url, org_id=workspace.org_id, workspace_id=workspace.id
        ),
        generated_at=now,
        overdue_overrides=overdue_overrides([workspace], now=now),
    )
