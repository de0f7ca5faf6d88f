"""Org and workspace administration: listing, renaming, deleting, memberships."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import Field

from fleetplane.api import responses, schemas
from fleetplane.api.deps import Context, Operator
from fleetplane.api.operator import iso, workspace_view
from fleetplane.api.schemas import MAX_REVISION, OperatorBody
from fleetplane.services import access, members
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level
from fleetplane.store.models import User

router = APIRouter(prefix="/api/v1", tags=["operator"], responses=schemas.OPERATOR_ERRORS)


class OrgUpdate(OperatorBody):
    name: str = Field(min_length=1, max_length=200)


class MemberAdd(OperatorBody):
    email: str = Field(min_length=1, max_length=320)
    role: str


class MemberUpdate(OperatorBody):
    role: str


def _members(rows: list[tuple[User, str]]) -> dict[str, Any]:
    return {
        "items": [{"userId": u.id, "email": u.email, "role": role} for u, role in rows],
        "nextCursor": None,
    }


@router.get("/orgs", response_model=responses.OrgList)
def list_orgs(context: Context, user: Operator) -> dict[str, Any]:
    """Orgs the caller belongs to, with its role."""
    with context.database.read() as session:
        rows = access.accessible_orgs(session, user=user)
    return {
        "items": [{"id": org.id, "name": org.name, "role": role} for org, role in rows],
        "nextCursor": None,
    }


@router.get("/orgs/{org_id}", response_model=responses.OrgRead)
def get_org(org_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """An org the caller belongs to."""
    with context.database.read() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=False)
        return {"id": org.id, "name": org.name}


@router.patch("/orgs/{org_id}", response_model=responses.OrgRead)
def rename_org(org_id: str, body: OrgUpdate, context: Context, user: Operator) -> dict[str, Any]:
    """Rename an org (owner or admin)."""
    with context.database.unit_of_work() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=True)
        workspace_service.rename_org(
            session, org=org, name=body.name, actor=user.email, now=context.clock()
        )
        return {"id": org.id, "name": org.name}


@router.delete("/orgs/{org_id}", status_code=204)
def delete_org(org_id: str, context: Context, user: Operator) -> Response:
    """Delete an org with all its workspaces (owner only)."""
    with context.database.unit_of_work() as session:
        org = access.require_org_owner(session, user=user, org_id=org_id)
        workspace_service.delete_org(session, org=org, actor=user.email, now=context.clock())
    return Response(status_code=204)


@router.get("/orgs/{org_id}/workspaces", response_model=responses.WorkspaceList)
def list_org_workspaces(org_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The org's workspaces the caller can read."""
    with context.database.read() as session:
        access.require_org(session, user=user, org_id=org_id, admin=False)
        rows = access.accessible_workspaces(session, user=user, org_id=org_id)
    return {"items": [workspace_view(w) for w in rows], "nextCursor": None}


@router.get("/workspaces", response_model=responses.WorkspaceList)
def list_workspaces(context: Context, user: Operator) -> dict[str, Any]:
    """Every workspace the caller can read."""
    with context.database.read() as session:
        rows = access.accessible_workspaces(session, user=user)
    return {"items": [workspace_view(w) for w in rows], "nextCursor": None}


@router.delete("/workspaces/{workspace_id}", status_code=204)
def delete_workspace(workspace_id: str, context: Context, user: Operator) -> Response:
    """Delete a workspace with its runtimes and keys (workspace admin)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        workspace_service.delete_workspace(
            session, workspace=workspace, actor=user.email, now=context.clock()
        )
    return Response(status_code=204)


@router.get("/orgs/{org_id}/members", response_model=responses.OrgMemberList)
def list_org_members(org_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The org's members."""
    with context.database.read() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=False)
        return _members(members.list_org_members(session, org=org))


@router.post("/orgs/{org_id}/members", status_code=201, response_model=responses.OrgMemberRole)
def add_org_member(
    org_id: str, body: MemberAdd, context: Context, user: Operator
) -> dict[str, Any]:
    """Add an existing user to the org (owner or admin; only an owner adds owners)."""
    with context.database.unit_of_work() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=True)
        if body.role == "owner":
            access.require_org_owner(session, user=user, org_id=org_id)
        member = members.add_org_member(
            session,
            org=org,
            email=body.email,
            role=body.role,
            actor=user.email,
            now=context.clock(),
        )
        return {"userId": member.user_id, "role": member.role}


@router.patch("/orgs/{org_id}/members/{user_id}", response_model=responses.OrgMemberRole)
def update_org_member(
    org_id: str, user_id: str, body: MemberUpdate, context: Context, user: Operator
) -> dict[str, Any]:
    """Change an org member's role (owner only: roles decide who owns the org)."""
    with context.database.unit_of_work() as session:
        org = access.require_org_owner(session, user=user, org_id=org_id)
        members.change_org_member(
            session,
            org=org,
            user_id=user_id,
            role=body.role,
            actor=user.email,
            now=context.clock(),
        )
        return {"userId": user_id, "role": body.role}


@router.delete("/orgs/{org_id}/members/{user_id}", status_code=204)
def remove_org_member(org_id: str, user_id: str, context: Context, user: Operator) -> Response:
    """Remove an org member (owner only); the last owner cannot be removed."""
    with context.database.unit_of_work() as session:
        org = access.require_org_owner(session, user=user, org_id=org_id)
        members.change_org_member(
            session, org=org, user_id=user_id, role=None, actor=user.email, now=context.clock()
        )
    return Response(status_code=204)


@router.get("/workspaces/{workspace_id}/members", response_model=responses.WorkspaceMemberList)
def list_workspace_members(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The workspace's members."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        return _members(members.list_workspace_members(session, workspace=workspace))


@router.post(
    "/workspaces/{workspace_id}/members",
    status_code=201,
    response_model=responses.WorkspaceMemberRole,
)
def add_workspace_member(
    workspace_id: str, body: MemberAdd, context: Context, user: Operator
) -> dict[str, Any]:
    """Add an existing user to the workspace (workspace admin)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        member = members.add_workspace_member(
            session,
            workspace=workspace,
            email=body.email,
            role=body.role,
            actor=user.email,
            now=context.clock(),
        )
        return {"userId": member.user_id, "role": member.role}


@router.patch(
    "/workspaces/{workspace_id}/members/{user_id}", response_model=responses.WorkspaceMemberRole
)
def update_workspace_member(
    workspace_id: str, user_id: str, body: MemberUpdate, context: Context, user: Operator
) -> dict[str, Any]:
    """Change a workspace member's role (workspace admin)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        members.change_workspace_member(
            session,
            workspace=workspace,
            user_id=user_id,
            role=body.role,
            actor=user.email,
            now=context.clock(),
        )
        return {"userId": user_id, "role": body.role}


@router.delete("/workspaces/{workspace_id}/members/{user_id}", status_code=204)
def remove_workspace_member(
    workspace_id: str, user_id: str, context: Context, user: Operator
) -> Response:
    """Remove a workspace member (workspace admin)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        members.change_workspace_member(
            session,
            workspace=workspace,
            user_id=user_id,
            role=None,
            actor=user.email,
            now=context.clock(),
        )
    return Response(status_code=204)


@router.get(
    "/workspaces/{workspace_id}/config/revisions/{number}",
    response_model=responses.ConfigRevisionDocument,
)
def get_revision(
    workspace_id: str,
    number: Annotated[int, Path(ge=1, le=MAX_REVISION)],
    context: Context,
    user: Operator,
) -> dict[str, Any]:
    """One config revision with its document."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        revision = workspace_service.config_revision(session, workspace=workspace, number=number)
        return {
            "number": revision.number,
            "hash": revision.hash,
            "author": revision.author,
            "createdAt": iso(revision.created_at),
            "document": revision.document,
        }


@router.get("/orgs/{org_id}/policies", response_model=responses.PolicySetRead)
def get_org_policies(org_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The org-scoped policy set."""
    with context.database.read() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=False)
        return workspace_service.org_policy(org).to_dict()


@router.get("/workspaces/{workspace_id}/policies", response_model=responses.PolicySetRead)
def get_workspace_policies(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The workspace-scoped policy set (see `fleet/config` for the effective one)."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        return workspace_service.workspace_policy(workspace).to_dict()


class Rollback(OperatorBody):
    number: int = Field(ge=1, le=MAX_REVISION)


@router.post("/workspaces/{workspace_id}/config/rollback", response_model=responses.ConfigChange)
def rollback_config(
    workspace_id: str, body: Rollback, context: Context, user: Operator
) -> dict[str, Any]:
    """Make an earlier revision current again (as a new revision with its document)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN, for_update=True
        )
        revision = workspace_service.rollback_config(
            session,
            workspace=workspace,
            number=body.number,
            actor=user.email,
            now=context.clock(),
        )
        return {"configRevision": {"number": revision.number, "hash": revision.hash}}


@router.get("/workspaces/{workspace_id}/config/diff", response_model=responses.ConfigDiff)
def diff_config(
    workspace_id: str,
    context: Context,
    user: Operator,
    from_number: Annotated[int, Query(alias="from", ge=1, le=MAX_REVISION)],
    to_number: Annotated[int, Query(alias="to", ge=1, le=MAX_REVISION)],
) -> dict[str, Any]:
    """A unified diff between two revisions."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        diff = workspace_service.diff_revisions(
            session, workspace=workspace, from_number=from_number, to_number=to_number
        )
    return {"from": from_number, "to": to_number, "diff": diff}
