"""Fleets for the dashboard tests (ASGI, store and browser): users, orgs, workspaces, runtimes.

Everything is made through the services, as a real server would make it, so that the counts
the dashboard shows come from the same rows the API reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from fleetplane.domain.config_hash import config_hash
from fleetplane.services import accounts, credentials, members, runtimes, workspaces
from fleetplane.store.db import Database
from fleetplane.store.models import Org, User, Workspace

PASSWORD = "correct horse battery"
DESIRED_DOCUMENT: dict[str, Any] = {"lanes": [{"name": "Operations: Runtime", "wip_limit": 2}]}
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime to seed: heartbeat age (None: never), version, which config it reports."""

    agent_id: str
    minutes_ago: float | None
    version: str | None = "3.12.6"
    reports: str | None = "desired"  # "desired", "previous" or None (never reports a hash)


# Every health and drift state, with the counts the dashboard must show for it (SPEC 3.1-3.5).
MIXED_FLEET = [
    RuntimeSpec("api-1", 1),  # connected, aligned
    RuntimeSpec("api-2", 2),  # connected, aligned
    RuntimeSpec("api-3", 1, reports="previous"),  # connected, needs_reconcile (differs)
    RuntimeSpec("worker-1", 12),  # stale, aligned
    RuntimeSpec("legacy-1", 1, version="3.3.0"),  # connected, upgrade_required
    RuntimeSpec("batch-1", 240),  # dormant, aligned
    RuntimeSpec("edge-1", None),  # never, awaiting_sync
    RuntimeSpec("worker-2", 1, version="3.5.1"),  # connected, needs_reconcile (limited)
]
MIXED_COUNTS = {
    "connected": 5,
    "stale": 1,
    "dormant": 1,
    "never": 1,
    "aligned": 4,
    "needs_reconcile": 2,
    "upgrade_required": 1,
    "awaiting_sync": 1,
}
ALL_ALIGNED = [RuntimeSpec(f"ok-{n}", 1) for n in range(3)]


@dataclass
class SeededWorkspace:
    """A workspace and the ids of its runtimes by agent id."""

    id: str
    org_id: str
    name: str
    desired_hash: str
    runtime_ids: dict[str, str] = field(default_factory=dict)


def user(session: Session, email: str, *, now: datetime, superuser: bool = False) -> User:
    """A user who signs in with PASSWORD."""
    return accounts.create_user(
        session, email=email, password=PASSWORD, is_superuser=superuser, actor="test", now=now
    )


def org(session: Session, name: str, *, owner: User, now: datetime) -> Org:
    """An org owned by `owner`."""
    return workspaces.create_org(session, name=name, owner=owner, now=now)


def workspace(
    session: Session,
    *,
    org: Org,
    name: str,
    fleet: list[RuntimeSpec],
    now: datetime,
    document: dict[str, Any] | None = None,
    policy_mode: str = "authoritative",
) -> SeededWorkspace:
    """A workspace at revision 2 (`document`) whose runtimes report as `fleet` says."""
    created = workspaces.create_workspace(
        session,
        org=org,
        name=name,
        policy_mode=policy_mode,
        dev_override_until=now + timedelta(days=2) if policy_mode == "dev-override" else None,
        actor="test",
        now=now,
    )
    previous = created.config_hash
    document = document if document is not None else {**DESIRED_DOCUMENT, "workspace": name}
    workspaces.store_config(session, workspace=created, document=document, actor="test", now=now)
    desired = config_hash(document)
    seeded = SeededWorkspace(created.id, org.id, name, desired)
    caller = runtimes.RuntimeCaller(workspace=created, runtime=None)
    for spec in fleet:
        if spec.minutes_ago is None:
            issued = credentials.preregister_runtime(
                session, workspace=created, agent_id=spec.agent_id, labels=None, actor="t", now=now
            )
            seeded.runtime_ids[spec.agent_id] = issued.runtime.id
            continue
        reported = {"desired": desired, "previous": previous, None: None}[spec.reports]
        runtime = runtimes.record_heartbeat(
            session,
            caller=caller,
            heartbeat=runtimes.Heartbeat(
                workspace_id=created.id,
                session_id=f"{spec.agent_id}-s1",
                agent_id=spec.agent_id,
                runtime_version=spec.version,
                config_hash=reported,
            ),
            now=now - timedelta(minutes=spec.minutes_ago),
        )
        seeded.runtime_ids[spec.agent_id] = runtime.id
    return seeded


def member(session: Session, *, workspace_id: str, email: str, role: str, now: datetime) -> None:
    """Give a user a role in one workspace."""
    target = session.get(Workspace, workspace_id)
    assert target is not None
    members.add_workspace_member(
        session, workspace=target, email=email, role=role, actor="test", now=now
    )


@dataclass
class TwoOrgs:
    """Org A (mixed fleet and an all-aligned workspace) and org B, with their people."""

    a_mixed: SeededWorkspace
    a_aligned: SeededWorkspace
    b_only: SeededWorkspace


def two_orgs(database: Database, *, now: datetime) -> TwoOrgs:
    """Org A owned by alice@a.test, org B owned by bob@b.test; a viewer, an operator in A."""
    with database.unit_of_work() as session:
        alice = user(session, "alice@a.test", now=now)
        bob = user(session, "bob@b.test", now=now)
        user(session, "vera@a.test", now=now)
        user(session, "oscar@a.test", now=now)
        org_a = org(session, "Org Alpha", owner=alice, now=now)
        org_b = org(session, "Org Beta", owner=bob, now=now)
        mixed = workspace(session, org=org_a, name="Alpha prod", fleet=MIXED_FLEET, now=now)
        aligned = workspace(session, org=org_a, name="Alpha staging", fleet=ALL_ALIGNED, now=now)
        b_only = workspace(session, org=org_b, name="Beta secret", fleet=ALL_ALIGNED[:2], now=now)
        member(session, workspace_id=mixed.id, email="vera@a.test", role="viewer", now=now)
        member(session, workspace_id=mixed.id, email="oscar@a.test", role="operator", now=now)
    return TwoOrgs(mixed, aligned, b_only)


def csrf_token(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = CSRF_FIELD.search(html)
    assert match is not None, "the page has no form with a csrf_token field"
    return match.group(1)
