"""The fleet surface (SPEC 4.3): the inventory for operators and the pull descriptor for all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from fleetplane.api import responses, schemas
from fleetplane.api.deps import Context, Token, current_operator, json_with_etag
from fleetplane.domain.errors import Invalid, NotFound
from fleetplane.domain.tokens import TokenKind, token_kind
from fleetplane.services import access
from fleetplane.services import fleet as fleet_service
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level
from fleetplane.services.runtimes import authenticate_runtime

router = APIRouter(prefix="/api/v1", tags=["fleet"], responses=schemas.OPERATOR_ERRORS)


@router.get("/workspaces/{workspace_id}/fleet", response_model=responses.FleetPage)
def fleet(
    workspace_id: str,
    request: Request,
    context: Context,
    token: Token,
    health: Annotated[list[str] | None, Query()] = None,
    drift: Annotated[list[str] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: int | None = None,
    cursor: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """One page of runtimes with health, compatibility and drift, the summary, desired state."""
    included = set(_split(include) or [])
    if included - {"archived"}:
        raise Invalid("include may only name archived", code="invalid_include")
    user = current_operator(context, token, request)
    # Read this process's own buffered heartbeats; other processes' are at most a flush behind.
    context.hot.liveness.flush()
    now = context.clock()
    workspace_service.lapse_if_due(context.database, workspace_id=workspace_id, now=now)
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        desired = workspace_service.desired_state(session, workspace=workspace)
        payload = fleet_service.fleet_page(
            session,
            desired=desired,
            rules=context.fleet_rules,
            now=now,
            health=_split(health),
            drift=_split(drift),
            text=q,
            limit=limit,
            cursor=cursor,
            include_archived="archived" in included,
        )
    return json_with_etag(request, payload, honour_if_none_match=True)


def _split(values: list[str] | None) -> list[str] | None:
    """Filters may repeat (`health=a&health=b`) or be comma-separated (`health=a,b`)."""
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


@router.get("/workspaces/{workspace_id}/fleet/config", response_model=responses.FleetConfig)
def fleet_config(workspace_id: str, request: Request, context: Context, token: Token) -> Response:
    """Where and what runtimes pull; for runtime credentials, workspace keys and operators."""
    kind = token_kind(token) if token else None
    now = context.clock()
    if kind in (TokenKind.WORKSPACE_KEY, TokenKind.RUNTIME):
        user = None
    else:
        # Operator token or dashboard session; anything else is refused there with 401.
        user = current_operator(context, token, request)
    workspace_service.lapse_if_due(context.database, workspace_id=workspace_id, now=now)
    with context.database.read() as session:
        if user is not None:
            workspace = access.require_workspace(
                session, user=user, workspace_id=workspace_id, level=Level.READ
            )
        else:
            caller = authenticate_runtime(session, token=token)
            if caller.workspace.id != workspace_id:
                raise NotFound("workspace not found")
            workspace = caller.workspace
        desired = workspace_service.desired_state(session, workspace=workspace)
        payload = fleet_service.fleet_config(desired, rules=context.fleet_rules)
    return json_with_etag(request, payload, honour_if_none_match=True)
