"""The operator surface (SPEC 4.4): orgs, workspaces, desired state, keys, enrollment, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from fleetplane.api import responses, schemas
from fleetplane.api.deps import Context, Operator
from fleetplane.domain.config_hash import parse_workspace_yaml
from fleetplane.domain.errors import BadRequest, Invalid, InvalidDocument
from fleetplane.domain.policy import apply_policy_mode, parse_policy_set
from fleetplane.services import access, audit, credentials
from fleetplane.services import runtimes as runtime_service
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level
from fleetplane.services.fleet import check_limit, decode_cursor, encode_cursor
from fleetplane.settings import Settings
from fleetplane.store.models import Org, Workspace

router = APIRouter(prefix="/api/v1", tags=["operator"], responses=schemas.OPERATOR_ERRORS)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def workspace_view(workspace: Workspace) -> dict[str, Any]:
    """A workspace as operators see it."""
    return {
        "id": workspace.id,
        "orgId": workspace.org_id,
        "name": workspace.name,
        "policyMode": workspace.policy_mode,
        "devOverrideUntil": iso(workspace.dev_override_until),
        "configRevision": {"number": workspace.config_revision, "hash": workspace.config_hash},
    }


@router.post("/orgs", status_code=201, response_model=responses.OrgRead)
def create_org(body: schemas.OrgCreate, context: Context, user: Operator) -> dict[str, str]:
    """Create an org; the caller becomes its owner."""
    with context.database.unit_of_work() as session:
        org = workspace_service.create_org(session, name=body.name, owner=user, now=context.clock())
    return {"id": org.id, "name": org.name}


@router.post("/orgs/{org_id}/workspaces", status_code=201, response_model=responses.WorkspaceRead)
def create_workspace(
    org_id: str, body: schemas.WorkspaceCreate, context: Context, user: Operator
) -> dict[str, Any]:
    """Create a workspace at config revision 1 (`{}`) in an org the caller administers."""
    with context.database.unit_of_work() as session:
        org = access.require_org(session, user=user, org_id=org_id, admin=True)
        workspace = workspace_service.create_workspace(
            session,
            org=org,
            name=body.name,
            policy_mode=body.policyMode,
            dev_override_until=body.devOverrideUntil,
            actor=user.email,
            now=context.clock(),
        )
        return workspace_view(workspace)


@router.get("/workspaces/{workspace_id}", response_model=responses.WorkspaceRead)
def get_workspace(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """A workspace the caller can read."""
    workspace_service.lapse_if_due(context.database, workspace_id=workspace_id, now=context.clock())
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        return workspace_view(workspace)


@router.patch("/workspaces/{workspace_id}", response_model=responses.WorkspaceRead)
def update_workspace(
    workspace_id: str, body: schemas.WorkspaceUpdate, context: Context, user: Operator
) -> dict[str, Any]:
    """Rename a workspace or change its authority mode (dev-override needs an expiry)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN, for_update=True
        )
        workspace_service.update_workspace(
            session,
            workspace=workspace,
            name=body.name,
            policy_mode=body.policyMode,
            dev_override_until=body.devOverrideUntil,
            actor=user.email,
            now=context.clock(),
        )
        return workspace_view(workspace)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidDocument(f"duplicate key {key!r} in JSON object")
        result[key] = value
    return result


def check_document_size(document: Any, *, max_depth: int, max_nodes: int) -> None:
    """Refuse a JSON document deeper or larger than the config limits, as YAML ones are."""
    pending: list[tuple[Any, int]] = [(document, 0)]
    nodes = 0
    while pending:
        value, depth = pending.pop()
        nodes += 1
        if isinstance(value, dict | list):
            depth += 1
            if depth > max_depth:
                raise InvalidDocument(f"Document nests deeper than {max_depth} levels")
            if isinstance(value, dict):
                nodes += len(value)  # keys are nodes too, as in YAML
                pending.extend((item, depth) for item in value.values())
            else:
                pending.extend((item, depth) for item in value)
        if nodes > max_nodes:
            raise InvalidDocument(f"Document expands to more than {max_nodes} nodes")


def parse_config_body(raw: bytes, content_type: str, settings: Settings) -> Any:
    """A config document from a JSON or YAML request body, within the config limits."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the body must be UTF-8 text", code="invalid_encoding") from exc
    if media in YAML_TYPES:
        return parse_workspace_yaml(
            text,
            max_depth=settings.config_max_depth,
            max_nodes=settings.config_max_nodes,
            max_alias_count=settings.config_max_alias_count,
            max_text_chars=settings.config_max_text_chars,
        )
    if media in ("application/json", ""):
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise InvalidDocument(
                f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno
            ) from exc
        except (RecursionError, ValueError) as exc:
            # Nesting past the interpreter's stack; an integer past Python's 4300 digits.
            raise InvalidDocument(f"invalid JSON: {exc}") from exc
        check_document_size(
            document, max_depth=settings.config_max_depth, max_nodes=settings.config_max_nodes
        )
        return document
    raise BadRequest(
        "send the config as application/json or application/yaml",
        code="unsupported_media_type",
        details={"contentType": media},
    )


@router.put(
    "/workspaces/{workspace_id}/config",
    response_model=responses.ConfigChange,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def put_config(
    workspace_id: str, request: Request, context: Context, user: Operator
) -> dict[str, Any]:
    """Store a new config revision from a JSON document or YAML text."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")

    def store() -> dict[str, Any]:
        # Parsing a large YAML document takes CPU seconds: never on the event loop.
        document = parse_config_body(raw, content_type, context.settings)
        with context.database.unit_of_work() as session:
            workspace = access.require_workspace(
                session, user=user, workspace_id=workspace_id, level=Level.ADMIN, for_update=True
            )
            revision = workspace_service.store_config(
                session,
                workspace=workspace,
                document=document,
                actor=user.email,
                now=context.clock(),
            )
            return {"configRevision": {"number": revision.number, "hash": revision.hash}}

    return await run_in_threadpool(store)


@router.get(
    "/workspaces/{workspace_id}/config/revisions", response_model=responses.ConfigRevisionList
)
def config_revisions(
    workspace_id: str,
    context: Context,
    user: Operator,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The config revision history, newest first."""
    page_size = check_limit(limit)
    before = int(decode_cursor(cursor, length=1)[0]) if cursor else None
    if before is not None and not 1 <= before <= schemas.MAX_REVISION + 1:
        raise Invalid("cursor is not one this server issued", code="invalid_cursor")
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        rows = workspace_service.list_config_revisions(
            session, workspace=workspace, limit=page_size + 1, before_number=before
        )
    more = len(rows) > page_size
    rows = rows[:page_size]
    return {
        "items": [
            {
                "number": r.number,
                "hash": r.hash,
                "author": r.author,
                "createdAt": iso(r.created_at),
            }
            for r in rows
        ],
        "nextCursor": encode_cursor([rows[-1].number]) if more else None,
    }


@router.put("/orgs/{org_id}/policies", response_model=responses.PolicySetRead)
def put_org_policies(
    org_id: str, body: dict[str, Any], context: Context, user: Operator
) -> dict[str, Any]:
    """Replace the org-scoped policy set."""
    with context.database.unit_of_work() as session:
        org: Org = access.require_org(session, user=user, org_id=org_id, admin=True)
        policy = workspace_service.put_org_policy(
            session, org=org, policy=body, actor=user.email, now=context.clock()
        )
    return policy.to_dict()


@router.put("/workspaces/{workspace_id}/policies", response_model=responses.PolicySetRead)
def put_workspace_policies(
    workspace_id: str, body: dict[str, Any], context: Context, user: Operator
) -> dict[str, Any]:
    """Replace the workspace-scoped policy set."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN, for_update=True
        )
        policy = workspace_service.put_workspace_policy(
            session, workspace=workspace, policy=body, actor=user.email, now=context.clock()
        )
    return policy.to_dict()


@router.post("/workspaces/{workspace_id}/policies/preview", response_model=responses.PolicyPreview)
def preview_policies(
    workspace_id: str, body: dict[str, Any], context: Context, user: Operator
) -> dict[str, Any]:
    """What a runtime with this local policy set would run under the workspace's mode."""
    local = parse_policy_set(body.get("local")) if body.get("local") is not None else None
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        desired = workspace_service.desired_state(session, workspace=workspace)
    effective, events = apply_policy_mode(
        mode=desired.policy_mode,
        workspace_id=workspace_id,
        remote=desired.effective_policy,
        local=local,
        timestamp=context.clock()
        .astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    )
    return {"effective": effective.to_dict(), "events": events}


@router.post(
    "/workspaces/{workspace_id}/api-key", status_code=201, response_model=responses.ApiKeyIssued
)
def regenerate_api_key(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """Issue a new workspace key (shown once) and revoke the old one at once."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        issued = credentials.regenerate_api_key(
            session, workspace=workspace, actor=user.email, now=context.clock()
        )
        public_url = context.settings.public_url
        block = credentials.control_plane_block(
            public_url=public_url,
            org_id=workspace.org_id,
            workspace_id=workspace.id,
            sync_interval=context.settings.heartbeat_interval_seconds,
            policy_mode=workspace.policy_mode,
        )
        return {
            "apiKey": issued.api_key,
            "connectCommand": credentials.connect_command(
                public_url=public_url, org_id=workspace.org_id, workspace_id=workspace.id
            ),
            "sdkEnrollment": {
                "endpoint": public_url,
                "orgId": workspace.org_id,
                "projectId": workspace.id,
                "tokenEnv": credentials.TOKEN_ENV,
                "workspaceYaml": {"control_plane": block},
            },
        }


@router.post(
    "/workspaces/{workspace_id}/enrollments",
    status_code=201,
    response_model=responses.EnrollmentIssued,
)
def create_enrollment(
    workspace_id: str,
    context: Context,
    user: Operator,
    body: schemas.EnrollmentCreate | None = None,
) -> dict[str, Any]:
    """Create an enrollment token (shown once) with an expiry and optional max uses."""
    body = body or schemas.EnrollmentCreate()
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.OPERATE
        )
        issued = credentials.create_enrollment(
            session,
            workspace=workspace,
            expires_in_seconds=body.expiresInSeconds,
            max_uses=body.maxUses,
            default_ttl_seconds=context.settings.enrollment_default_ttl_seconds,
            actor=user.email,
            now=context.clock(),
        )
        return {
            "id": issued.row.id,
            "token": issued.token,
            "expiresAt": iso(issued.row.expires_at),
            "maxUses": issued.row.max_uses,
        }


@router.get("/workspaces/{workspace_id}/enrollments", response_model=responses.EnrollmentList)
def list_enrollments(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """Enrollment tokens of the workspace, without their secrets."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.OPERATE
        )
        rows = credentials.list_enrollments(session, workspace=workspace)
    return {
        "items": [
            {
                "id": r.id,
                "prefix": r.display_prefix,
                "expiresAt": iso(r.expires_at),
                "maxUses": r.max_uses,
                "uses": r.uses,
                "revokedAt": iso(r.revoked_at),
                "createdBy": r.created_by,
                "createdAt": iso(r.created_at),
            }
            for r in rows
        ],
        "nextCursor": None,
    }


@router.delete("/workspaces/{workspace_id}/enrollments/{enrollment_id}", status_code=204)
def revoke_enrollment(
    workspace_id: str, enrollment_id: str, context: Context, user: Operator
) -> Response:
    """Revoke an enrollment token."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.OPERATE
        )
        credentials.revoke_enrollment(
            session,
            workspace=workspace,
            enrollment_id=enrollment_id,
            actor=user.email,
            now=context.clock(),
        )
    return Response(status_code=204)


@router.post(
    "/workspaces/{workspace_id}/runtimes",
    status_code=201,
    response_model=responses.RuntimeRegistered,
)
def preregister_runtime(
    workspace_id: str, body: schemas.RuntimeCreate, context: Context, user: Operator
) -> dict[str, Any]:
    """Register a runtime ahead of its first heartbeat, with its own credential (shown once)."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.OPERATE
        )
        issued = credentials.preregister_runtime(
            session,
            workspace=workspace,
            agent_id=body.agentId,
            labels=body.labels,
            actor=user.email,
            now=context.clock(),
        )
        return {
            "runtimeId": issued.runtime.id,
            "credential": issued.credential,
            "connectCommand": credentials.connect_command(
                public_url=context.settings.public_url,
                org_id=workspace.org_id,
                workspace_id=workspace.id,
            ),
        }


@router.delete("/workspaces/{workspace_id}/runtimes/{runtime_id}", status_code=204)
def revoke_runtime(
    workspace_id: str, runtime_id: str, context: Context, user: Operator
) -> Response:
    """Revoke a runtime: its credential fails at once and it leaves the inventory."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.OPERATE
        )
        runtime_service.revoke_runtime(
            session,
            workspace=workspace,
            runtime_id=runtime_id,
            actor=user.email,
            now=context.clock(),
        )
    return Response(status_code=204)


@router.get("/workspaces/{workspace_id}/audit", response_model=responses.AuditLog)
def workspace_audit(
    workspace_id: str,
    context: Context,
    user: Operator,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The workspace's audit log, newest first."""
    page_size = check_limit(limit)
    before = int(decode_cursor(cursor, length=1)[0]) if cursor else None
    with context.database.read() as session:
        access.require_workspace(session, user=user, workspace_id=workspace_id, level=Level.READ)
        rows = audit.list_for_workspace(
            session, workspace_id=workspace_id, limit=page_size + 1, before_seq=before
        )
    more = len(rows) > page_size
    rows = rows[:page_size]
    return {
        "items": [
            {
                "id": r.seq,
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "beforeHash": r.before_hash,
                "afterHash": r.after_hash,
                "createdAt": iso(r.created_at),
            }
            for r in rows
        ],
        "nextCursor": encode_cursor([rows[-1].seq]) if more else None,
    }
