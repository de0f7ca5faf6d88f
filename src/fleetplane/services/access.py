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
