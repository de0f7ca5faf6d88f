"""Orgs, workspaces and their desired state: config revisions, policy sets, authority mode."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fleetplane.domain.config_hash import config_hash
from fleetplane.domain.errors import Invalid, NotFound
from fleetplane.domain.policy import (
    EMPTY_ALLOW,
    POLICY_MODES,
    PolicySet,
    merge_scopes,
    parse_policy_set,
    policy_revision,
)
from fleetplane.services import audit
from fleetplane.store.db import Database
from fleetplane.store.models import ConfigRevision, Org, OrgMember, User, Workspace

DEV_OVERRIDE = "dev-override"
DEFAULT_POLICY_MODE = "authoritative"
DEV_OVERRIDE_MAX = timedelta(days=7)
EMPTY_CONFIG: dict[str, Any] = {}


@dataclass(frozen=True)
class DesiredState:
    """What a workspace wants every runtime to run (SPEC 1, 4.3)."""

    workspace_id: str
    org_id: str
    config_revision: int
    config_hash: str
    config_updated_at: datetime
    policy_mode: str
    dev_override_until: datetime | None
    org_policy: PolicySet
    workspace_policy: PolicySet

    @property
    def effective_policy(self) -> PolicySet:
        """The policy set runtimes pull: both scopes merged, deny winning."""
        return merge_scopes(self.org_policy, self.workspace_policy)

    @property
    def policy_revision(self) -> str:
        """Hash of the policy sets and the mode; changes whenever any of them does."""
        until = self.dev_override_until.isoformat() if self.dev_override_until else None
        return policy_revision(self.org_policy, self.workspace_policy, self.policy_mode, until)


def _stored_policy(value: dict[str, Any] | None) -> PolicySet:
    return parse_policy_set(value) if value is not None else EMPTY_ALLOW


def _name(value: str, what: str) -> str:
    name = value.strip()
    if not name or len(name) > 200:
        raise Invalid(f"{what} name must be 1 to 200 characters", code="invalid_name")
    return name


def create_org(session: Session, *, name: str, owner: User, now: datetime) -> Org:
    """Create an org whose owner is the creating user."""
    org = Org(name=_name(name, "org"), created_at=now)
    session.add(org)
    session.flush()
    session.add(OrgMember(org_id=org.id, user_id=owner.id, role="owner"))
    audit.record(
        session,
        actor=owner.email,
        action="org.create",
        target=f"org:{org.id}",
        now=now,
        org_id=org.id,
    )
    return org


def _check_mode(mode: str) -> str:
    if mode not in POLICY_MODES:
        raise Invalid(
            f"policyMode must be one of {', '.join(POLICY_MODES)}",
            code="invalid_policy_mode",
            details={"allowed": list(POLICY_MODES)},
        )
    return mode


def _check_dev_override_until(until: datetime | None, *, now: datetime) -> datetime:
    if until is None:
        raise Invalid(
            "dev-override needs devOverrideUntil, at most 7 days ahead",
            code="dev_override_expiry_required",
        )
    if until.tzinfo is None:
        raise Invalid("devOverrideUntil must carry a timezone", code="invalid_dev_override_until")
    if until <= now or until - now > DEV_OVERRIDE_MAX:
        raise Invalid(
            "devOverrideUntil must be in the future and at most 7 days ahead",
            code="invalid_dev_override_until",
        )
    return until


def create_workspace(
    session: Session,
    *,
    org: Org,
    name: str,
    policy_mode: str | None,
    dev_override_until: datetime | None,
    actor: str,
    now: datetime,
) -> Workspace:
    """Create a workspace at config revision 1 with the empty mapping as its config."""
    mode = _check_mode(policy_mode or DEFAULT_POLICY_MODE)
    previous = None
    if mode == DEV_OVERRIDE:
        dev_override_until = _check_dev_override_until(dev_override_until, now=now)
        previous = DEFAULT_POLICY_MODE
    else:
        dev_override_until = None
    empty_hash = config_hash(EMPTY_CONFIG)
    workspace = Workspace(
        org_id=org.id,
        name=_name(name, "workspace"),
        policy_mode=mode,
        previous_policy_mode=previous,
        dev_override_until=dev_override_until,
        config_revision=1,
        config_hash=empty_hash,
        config_updated_at=now,
        created_at=now,
    )
    session.add(workspace)
    session.flush()
    session.add(
        ConfigRevision(
            workspace_id=workspace.id,
            number=1,
            hash=empty_hash,
            document=EMPTY_CONFIG,
            author=actor,
            created_at=now,
        )
    )
    audit.record(
        session,
        actor=actor,
        action="workspace.create",
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=org.id,
        workspace_id=workspace.id,
        after_hash=empty_hash,
    )
    return workspace


def update_workspace(
    session: Session,
    *,
    workspace: Workspace,
    name: str | None,
    policy_mode: str | None,
    dev_override_until: datetime | None,
    actor: str,
    now: datetime,
) -> Workspace:
    """Rename a workspace or change its authority mode; dev-override needs a near expiry."""
    before = desired_state(session, workspace=workspace).policy_revision
    if name is not None:
        workspace.name = _name(name, "workspace")
    if policy_mode is not None:
        mode = _check_mode(policy_mode)
        if mode == DEV_OVERRIDE:
            workspace.dev_override_until = _check_dev_override_until(dev_override_until, now=now)
            if workspace.policy_mode != DEV_OVERRIDE:
                workspace.previous_policy_mode = workspace.policy_mode
        else:
            workspace.dev_override_until = None
            workspace.previous_policy_mode = None
        workspace.policy_mode = mode
    elif dev_override_until is not None:
        if workspace.policy_mode != DEV_OVERRIDE:
            raise Invalid(
                "devOverrideUntil applies only with policyMode dev-override",
                code="invalid_dev_override_until",
            )
        workspace.dev_override_until = _check_dev_override_until(dev_override_until, now=now)
    session.flush()
    after = desired_state(session, workspace=workspace).policy_revision
    audit.record(
        session,
        actor=actor,
        action="workspace.update",
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
        before_hash=before,
        after_hash=after,
    )
    return workspace


def lapse_dev_override(session: Session, *, workspace_id: str, now: datetime) -> bool:
    """Return a workspace whose dev-override has expired to its previous mode; True if it did.

    The guarded UPDATE makes the return happen once even when several processes notice it.
    """
    workspace = session.get(Workspace, workspace_id)
    if workspace is None or workspace.policy_mode != DEV_OVERRIDE:
        return False
    until = workspace.dev_override_until
    if until is None or until > now:
        return False
    before = desired_state(session, workspace=workspace).policy_revision
    previous = workspace.previous_policy_mode or DEFAULT_POLICY_MODE
    result = session.execute(
        update(Workspace)
        .where(
            Workspace.id == workspace_id,
            Workspace.policy_mode == DEV_OVERRIDE,
            Workspace.dev_override_until == until,
        )
        .values(policy_mode=previous, previous_policy_mode=None, dev_override_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(workspace)
    audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action="workspace.dev_override_lapsed",
        target=f"workspace:{workspace_id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace_id,
        before_hash=before,
        after_hash=desired_state(session, workspace=workspace).policy_revision,
    )
    return True


def lapse_if_due(database: Database, *, workspace_id: str, now: datetime) -> bool:
    """Return an expired dev-override to its previous mode; reads only when none is due."""
    with database.read() as session:
        due = session.scalar(
            select(Workspace.id).where(
                Workspace.id == workspace_id,
                Workspace.policy_mode == DEV_OVERRIDE,
                Workspace.dev_override_until <= now,
            )
        )
    if due is None:
        return False
    with database.unit_of_work() as session:
        return lapse_dev_override(session, workspace_id=workspace_id, now=now)


def desired_state(session: Session, *, workspace: Workspace) -> DesiredState:
    """The workspace's desired state as stored now."""
    org_policy_value = session.scalar(select(Org.policy).where(Org.id == workspace.org_id))
    return DesiredState(
        workspace_id=workspace.id,
        org_id=workspace.org_id,
        config_revision=workspace.config_revision,
        config_hash=workspace.config_hash,
        config_updated_at=workspace.config_updated_at,
        policy_mode=workspace.policy_mode,
        dev_override_until=workspace.dev_override_until,
        org_policy=_stored_policy(org_policy_value),
        workspace_policy=_stored_policy(workspace.policy),
    )


def current_config(session: Session, *, workspace: Workspace) -> ConfigRevision:
    """The config revision the workspace currently wants."""
    revision = session.scalar(
        select(ConfigRevision).where(
            ConfigRevision.workspace_id == workspace.id,
            ConfigRevision.number == workspace.config_revision,
        )
    )
    if revision is None:  # pragma: no cover - guarded by the transaction that sets both
        raise NotFound("config revision not found")
    return revision


def store_config(
    session: Session,
    *,
    workspace: Workspace,
    document: Any,
    actor: str,
    now: datetime,
    action: str = "config.update",
) -> ConfigRevision:
    """Store a config document: identical to the current one returns it, else a new revision."""
    if not isinstance(document, dict):
        raise Invalid(
            "a workspace config must be a mapping (a YAML or JSON object)",
            code="config_not_a_mapping",
            details={"type": type(document).__name__},
        )
    new_hash = config_hash(document)
    current = current_config(session, workspace=workspace)
    if new_hash == current.hash:
        return current
    number = workspace.config_revision + 1
    revision = ConfigRevision(
        workspace_id=workspace.id,
        number=number,
        hash=new_hash,
        document=document,
        author=actor,
        created_at=now,
    )
    session.add(revision)
    workspace.config_revision = number
    workspace.config_hash = new_hash
    workspace.config_updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
        before_hash=current.hash,
        after_hash=new_hash,
    )
    return revision


def list_config_revisions(
    session: Session, *, workspace: Workspace, limit: int, before_number: int | None
) -> list[ConfigRevision]:
    """Config revisions of a workspace, newest first."""
    query = select(ConfigRevision).where(ConfigRevision.workspace_id == workspace.id)
    if before_number is not None:
        query = query.where(ConfigRevision.number < before_number)
    return list(session.scalars(query.order_by(ConfigRevision.number.desc()).limit(limit)))


def put_org_policy(
    session: Session, *, org: Org, policy: object, actor: str, now: datetime
) -> PolicySet:
    """Replace the org-scoped policy set, which applies to every workspace of the org."""
    parsed = parse_policy_set(policy)
    before = policy_revision(_stored_policy(org.policy), EMPTY_ALLOW, "", None)
    org.policy = parsed.to_dict()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="org.policies.update",
        target=f"org:{org.id}",
        now=now,
        org_id=org.id,
        before_hash=before,
        after_hash=policy_revision(parsed, EMPTY_ALLOW, "", None),
    )
    return parsed


def put_workspace_policy(
    session: Session, *, workspace: Workspace, policy: object, actor: str, now: datetime
) -> PolicySet:
    """Replace the workspace-scoped policy set, which adds to the org's rules."""
    parsed = parse_policy_set(policy)
    before = desired_state(session, workspace=workspace).policy_revision
    workspace.policy = parsed.to_dict()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="workspace.policies.update",
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
        before_hash=before,
        after_hash=desired_state(session, workspace=workspace).policy_revision,
    )
    return parsed


def rename_org(session: Session, *, org: Org, name: str, actor: str, now: datetime) -> Org:
    """Rename an org."""
    org.name = _name(name, "org")
    session.flush()
    audit.record(
        session, actor=actor, action="org.update", target=f"org:{org.id}", now=now, org_id=org.id
    )
    return org


def delete_org(session: Session, *, org: Org, actor: str, now: datetime) -> None:
    """Delete an org with its workspaces, runtimes and keys (the audit log keeps the record)."""
    audit.record(
        session, actor=actor, action="org.delete", target=f"org:{org.id}", now=now, org_id=org.id
    )
    session.delete(org)
    session.flush()


def delete_workspace(session: Session, *, workspace: Workspace, actor: str, now: datetime) -> None:
    """Delete a workspace with its runtimes, keys and tokens (the audit log keeps the record)."""
    audit.record(
        session,
        actor=actor,
        action="workspace.delete",
        target=f"workspace:{workspace.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
        before_hash=workspace.config_hash,
    )
    session.delete(workspace)
    session.flush()


def config_revision(session: Session, *, workspace: Workspace, number: int) -> ConfigRevision:
    """One stored revision of the workspace config, or NotFound."""
    revision = session.scalar(
        select(ConfigRevision).where(
            ConfigRevision.workspace_id == workspace.id, ConfigRevision.number == number
        )
    )
    if revision is None:
        raise NotFound("config revision not found")
    return revision


def org_policy(org: Org) -> PolicySet:
    """The org-scoped policy set (allow, no rules, when none was ever set)."""
    return _stored_policy(org.policy)


def workspace_policy(workspace: Workspace) -> PolicySet:
    """The workspace-scoped policy set."""
    return _stored_policy(workspace.policy)


def rollback_config(
    session: Session, *, workspace: Workspace, number: int, actor: str, now: datetime
) -> ConfigRevision:
    """Make an earlier revision's document current again, as a new revision."""
    earlier = config_revision(session, workspace=workspace, number=number)
    return store_config(
        session,
        workspace=workspace,
        document=earlier.document,
        actor=actor,
        now=now,
        action="config.rollback",
    )


def diff_revisions(
    session: Session, *, workspace: Workspace, from_number: int, to_number: int
) -> str:
    """A unified diff between two revisions' documents, each pretty-printed with sorted keys."""
    before = config_revision(session, workspace=workspace, number=from_number)
    after = config_revision(session, workspace=workspace, number=to_number)

    def lines(document: Any) -> list[str]:
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
        return text.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(
            lines(before.document),
            lines(after.document),
            fromfile=f"revision {from_number}",
            tofile=f"revision {to_number}",
        )
    )
