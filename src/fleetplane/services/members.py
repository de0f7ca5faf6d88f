"""Org and workspace memberships; an org always keeps at least one owner."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Conflict, Invalid, NotFound
from fleetplane.services import audit
from fleetplane.services.access import ORG_ROLES, WORKSPACE_ROLES
from fleetplane.store.models import Org, OrgMember, User, Workspace, WorkspaceMember


def _user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user with email {email}", code="user_not_found")
    return user


def _check_role(role: str, allowed: tuple[str, ...]) -> str:
    if role not in allowed:
        raise Invalid(
            f"role must be one of {', '.join(allowed)}",
            code="invalid_role",
            details={"allowed": list(allowed)},
        )
    return role


def _owners(session: Session, org_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(OrgMember)
            .where(OrgMember.org_id == org_id, OrgMember.role == "owner")
        )
        or 0
    )


def add_org_member(
    session: Session, *, org: Org, email: str, role: str, actor: str, now: datetime
) -> OrgMember:
    """Add an existing user to an org with a role."""
    _check_role(role, ORG_ROLES)
    user = _user(session, email)
    if session.get(OrgMember, (org.id, user.id)) is not None:
        raise Conflict("the user is already a member of this org", code="already_member")
    member = OrgMember(org_id=org.id, user_id=user.id, role=role)
    session.add(member)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="org.member.add",
        target=f"user:{user.id}",
        now=now,
        org_id=org.id,
    )
    return member


def change_org_member(
    session: Session, *, org: Org, user_id: str, role: str | None, actor: str, now: datetime
) -> OrgMember | None:
    """Change a member's role (role) or remove the member (None); the last owner stays."""
    if role is not None:
        _check_role(role, ORG_ROLES)
    member = session.get(OrgMember, (org.id, user_id), with_for_update=True)
    if member is None:
        raise NotFound("member not found")
    if member.role == "owner" and role != "owner" and _owners(session, org.id) <= 1:
        raise Conflict("an org must keep at least one owner", code="last_owner")
    if role is None:
        session.delete(member)
        action = "org.member.remove"
    else:
        member.role = role
        action = "org.member.update"
    session.flush()
    audit.record(
        session, actor=actor, action=action, target=f"user:{user_id}", now=now, org_id=org.id
    )
    return member if role is not None else None


def add_workspace_member(
    session: Session, *, workspace: Workspace, email: str, role: str, actor: str, now: datetime
) -> WorkspaceMember:
    """Add an existing user to a workspace with a role."""
    _check_role(role, WORKSPACE_ROLES)
    user = _user(session, email)
    if session.get(WorkspaceMember, (workspace.id, user.id)) is not None:
        raise Conflict("the user is already a member of this workspace", code="already_member")
    member = WorkspaceMember(workspace_id=workspace.id, user_id=user.id, role=role)
    session.add(member)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="workspace.member.add",
        target=f"user:{user.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return member


def change_workspace_member(
    session: Session,
    *,
    workspace: Workspace,
    user_id: str,
    role: str | None,
    actor: str,
    now: datetime,
) -> WorkspaceMember | None:
    """Change a workspace member's role, or remove the member when role is None."""
    if role is not None:
        _check_role(role, WORKSPACE_ROLES)
    member = session.get(WorkspaceMember, (workspace.id, user_id))
    if member is None:
        raise NotFound("member not found")
    if role is None:
        session.delete(member)
        action = "workspace.member.remove"
    else:
        member.role = role
        action = "workspace.member.update"
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        target=f"user:{user_id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return member if role is not None else None


def list_org_members(session: Session, *, org: Org) -> list[tuple[User, str]]:
    """An org's members with their roles."""
    rows = session.execute(
        select(User, OrgMember.role)
        .join(OrgMember, OrgMember.user_id == User.id)
        .where(OrgMember.org_id == org.id)
        .order_by(User.email)
    ).all()
    return [(user, role) for user, role in rows]


def list_workspace_members(session: Session, *, workspace: Workspace) -> list[tuple[User, str]]:
    """A workspace's members with their roles."""
    rows = session.execute(
        select(User, WorkspaceMember.role)
        .join(WorkspaceMember, WorkspaceMember.user_id == User.id)
        .where(WorkspaceMember.workspace_id == workspace.id)
        .order_by(User.email)
    ).all()
    return [(user, role) for user, role in rows]
