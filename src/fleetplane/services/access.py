"""Who may do what (SPEC 1): org owner/admin/member and workspace admin/operator/viewer.

Anything a caller may not see raises NotFound, exactly as if it did not exist.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Forbidden, NotFound
from fleetplane.store.models import Org, OrgMember, User, Workspace, WorkspaceMember

ORG_ROLES = ("owner", "admin", "member")
WORKSPACE_ROLES = ("admin", "operator", "viewer")


class Level(IntEnum):
    """What a caller may do in a workspace, each level including those below it."""

    NONE = 0
    READ = 1
    OPERATE = 2
    ADMIN = 3


_WORKSPACE_ROLE_LEVEL = {"viewer": Level.READ, "operator": Level.OPERATE, "admin": Level.ADMIN}


def org_role(session: Session, *, user: User, org_id: str) -> str | None:
    """The user's role in the org, or None."""
    return session.scalar(
        select(OrgMember.role).where(OrgMember.org_id == org_id, OrgMember.user_id == user.id)
    )


def workspace_level(session: Session, *, user: User, workspace: Workspace) -> Level:
    """The user's level in a workspace: superusers and org owners/admins administer it."""
    if user.is_superuser:
        return Level.ADMIN
    if org_role(session, user=user, org_id=workspace.org_id) in ("owner", "admin"):
        return Level.ADMIN
    role = session.scalar(
        select(WorkspaceMember.role).where(
            WorkspaceMember.workspace_id == workspace.id, WorkspaceMember.user_id == user.id
        )
    )
    return _WORKSPACE_ROLE_LEVEL.get(role or "", Level.NONE)


def require_org(session: Session, *, user: User, org_id: str, admin: bool) -> Org:
    """The org if the user belongs to it (as owner/admin when `admin`); else NotFound/Forbidden."""
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound("org not found")
    if user.is_superuser:
        return org
    role = org_role(session, user=user, org_id=org_id)
    if role is None:
        raise NotFound("org not found")
    if admin and role not in ("owner", "admin"):
        raise Forbidden("this needs the org owner or admin role")
    return org


def require_org_owner(session: Session, *, user: User, org_id: str) -> Org:
    """The org if the user owns it (or is a superuser)."""
    org = require_org(session, user=user, org_id=org_id, admin=True)
    if not user.is_superuser and org_role(session, user=user, org_id=org_id) != "owner":
        raise Forbidden("this needs the org owner role")
    return org


def require_workspace(
    session: Session, *, user: User, workspace_id: str, level: Level, for_update: bool = False
) -> Workspace:
    """The workspace if the user reaches `level` in it; NotFound when it cannot even read it."""
    query = select(Workspace).where(Workspace.id == workspace_id)
    if for_update:
        query = query.with_for_update()
    workspace = session.scalar(query)
    if workspace is None:
        raise NotFound("workspace not found")
    actual = workspace_level(session, user=user, workspace=workspace)
    if actual < Level.READ:
        raise NotFound("workspace not found")
    if actual < level:
        raise Forbidden(f"this needs the workspace {level.name.lower()} level")
    return workspace


def accessible_workspaces(
    session: Session, *, user: User, org_id: str | None = None
) -> list[Workspace]:
    """Every workspace the user can read, by org then name."""
    query = select(Workspace)
    if not user.is_superuser:
        admin_orgs = select(OrgMember.org_id).where(
            OrgMember.user_id == user.id, OrgMember.role.in_(("owner", "admin"))
        )
        member_of = select(WorkspaceMember.workspace_id).where(WorkspaceMember.user_id == user.id)
        query = query.where(Workspace.org_id.in_(admin_orgs) | Workspace.id.in_(member_of))
    if org_id is not None:
        query = query.where(Workspace.org_id == org_id)
    return list(session.scalars(query.order_by(Workspace.org_id, Workspace.name, Workspace.id)))


def accessible_orgs(session: Session, *, user: User) -> list[tuple[Org, str | None]]:
    """Orgs the user belongs to (or reaches through a workspace), with the user's org role."""
    if user.is_superuser:
        return [
            (org, org_role(session, user=user, org_id=org.id))
            for org in session.scalars(select(Org).order_by(Org.name, Org.id))
        ]
    roles: dict[str, str] = dict(
        session.execute(
            select(OrgMember.org_id, OrgMember.role).where(OrgMember.user_id == user.id)
        ).all()
    )
    via_workspace = set(
        session.scalars(
            select(Workspace.org_id)
            .join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)
            .where(WorkspaceMember.user_id == user.id)
        )
    )
    ids = set(roles) | via_workspace
    if not ids:
        return []
    orgs = session.scalars(select(Org).where(Org.id.in_(ids)).order_by(Org.name, Org.id))
    return [(org, roles.get(org.id)) for org in orgs]
