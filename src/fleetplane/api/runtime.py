"""The runtime surface (SPEC 4.2): the LumenFlow control-plane SDK v1 wire contract."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from fleetplane.api import hot
from fleetplane.api.context import AppContext, CachedCaller
from fleetplane.api.deps import Context, Token, json_with_etag
from fleetplane.services import runtimes as runtime_service
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.credentials import control_plane_block
from fleetplane.services.hotpath import WorkspaceAnswer, identity_from_row
from fleetplane.services.runtimes import RuntimeCaller, authenticate_runtime, check_workspace
from fleetplane.services.workspaces import DesiredState

from . import responses, schemas

router = APIRouter(prefix="/api/v1", tags=["runtime"], responses=schemas.RUNTIME_ERRORS)


def _iso_now(context: AppContext) -> str:
    return context.clock().isoformat().replace("+00:00", "Z")


def desired_for_caller(
    session: Session, context: AppContext, caller: RuntimeCaller
) -> DesiredState:
    """The caller's workspace desired state, after returning an expired dev-override."""
    workspace_service.lapse_dev_override(
        session, workspace_id=caller.workspace.id, now=context.clock()
    )
    return workspace_service.desired_state(session, workspace=caller.workspace)


def _config_body(session: Session, context: AppContext, caller: RuntimeCaller) -> dict[str, Any]:
    desired = desired_for_caller(session, context, caller)
    revision = workspace_service.current_config(session, workspace=caller.workspace)
    return {
        "id": caller.workspace.id,
        "control_plane": control_plane_block(
            public_url=context.settings.public_url,
            org_id=caller.workspace.org_id,
            workspace_id=caller.workspace.id,
            sync_interval=context.settings.heartbeat_interval_seconds,
            policy_mode=desired.policy_mode,
        ),
        "config": revision.document,
        "config_hash": revision.hash,
        "config_revision": revision.number,
    }


def _policies_body(session: Session, context: AppContext, caller: RuntimeCaller) -> dict[str, Any]:
    return desired_for_caller(session, context, caller).effective_policy.to_dict()


def remember(
    context: AppContext,
    token: str | None,
    caller: RuntimeCaller,
    desired: DesiredState,
    *,
    generation: int,
) -> None:
    """Cache what the database just confirmed, for the hot path's next requests."""
    if token is None:
        return
    hot.remember_caller(
        context,
        token,
        CachedCaller(
            workspace_id=caller.workspace.id,
            org_id=caller.workspace.org_id,
            runtime_id=caller.runtime.id if caller.runtime is not None else None,
        ),
        generation=generation,
    )
    hot.remember_answer(
        context,
        WorkspaceAnswer(
            workspace_id=desired.workspace_id,
            org_id=desired.org_id,
            config_hash=desired.config_hash,
            policy_mode=desired.policy_mode,
            dev_override_until=desired.dev_override_until,
        ),
        generation=generation,
    )


@router.post("/heartbeat", response_model=responses.HeartbeatAck)
def heartbeat(body: schemas.HeartbeatRequest, context: Context, token: Token) -> dict[str, Any]:
    """Record a heartbeat; the answer carries the desired config hash and the policy mode."""
    generation = context.hot.generation
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        runtime = runtime_service.record_heartbeat(
            session,
            caller=caller,
            heartbeat=runtime_service.Heartbeat(
                workspace_id=body.workspace_id,
                session_id=body.session_id,
                agent_id=body.agent_id,
                runtime_version=body.runtime_version,
                config_hash=body.config_hash,
                apply_failed_hash=body.config_apply_failed_hash,
                apply_error=body.config_apply_error,
            ),
            now=context.clock(),
        )
        desired = desired_for_caller(session, context, caller)
    remember(context, token, caller, desired, generation=generation)
    hot.remember_runtime(
        context,
        identity_from_row(runtime),
        by_credential=caller.via_runtime_credential,
        agent_id=body.agent_id,
        session_id=body.session_id,
        generation=generation,
    )
    return {
        "status": "ok",
        "server_time": _iso_now(context),
        "next_heartbeat_ms": context.settings.heartbeat_interval_seconds * 1000,
        "config_hash": desired.config_hash,
        "policy_mode": desired.policy_mode,
    }


@router.post("/config", response_model=responses.RuntimeConfig)
def pull_config(
    request: Request, body: schemas.WorkspaceScopedRequest, context: Context, token: Token
) -> Response:
    """The desired workspace config document with its hash and revision (always 200)."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        check_workspace(caller, body.workspace_id)
        payload = _config_body(session, context, caller)
    return json_with_etag(request, payload, honour_if_none_match=False)


@router.get("/config", response_model=responses.RuntimeConfig)
def get_config(
    request: Request, context: Context, token: Token, workspace_id: str | None = None
) -> Response:
    """As `POST /config`, honouring If-None-Match with 304."""
    generation = context.hot.generation
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        check_workspace(caller, workspace_id)
        payload = _config_body(session, context, caller)
        desired = workspace_service.desired_state(session, workspace=caller.workspace)
    response = json_with_etag(request, payload, honour_if_none_match=True)
    remember(context, token, caller, desired, generation=generation)
    hot.remember_etag(
        context, caller.workspace.id, "config", response.headers["etag"], generation=generation
    )
    return response


@router.post("/policies", response_model=responses.PolicySetRead)
def pull_policies(
    request: Request, body: schemas.WorkspaceScopedRequest, context: Context, token: Token
) -> Response:
    """The effective policy set (org and workspace scopes merged, deny winning)."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        check_workspace(caller, body.workspace_id)
        payload = _policies_body(session, context, caller)
    return json_with_etag(request, payload, honour_if_none_match=False)


@router.get("/policies", response_model=responses.PolicySetRead)
def get_policies(
    request: Request, context: Context, token: Token, workspace_id: str | None = None
) -> Response:
    """As `POST /policies`, honouring If-None-Match with 304."""
    generation = context.hot.generation
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        check_workspace(caller, workspace_id)
        payload = _policies_body(session, context, caller)
        desired = workspace_service.desired_state(session, workspace=caller.workspace)
    response = json_with_etag(request, payload, honour_if_none_match=True)
    remember(context, token, caller, desired, generation=generation)
    hot.remember_etag(
        context, caller.workspace.id, "policies", response.headers["etag"], generation=generation
    )
    return response


@router.post("/events", response_model=responses.Accepted)
def events(body: schemas.EventsRequest, context: Context, token: Token) -> dict[str, int]:
    """Store kernel events; `workspace_updated` and `config_apply_failed` update drift."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        accepted, changed = runtime_service.record_events(
            session,
            caller=caller,
            workspace_id=body.workspace_id,
            agent_id=body.agent_id,
            events=body.events,
            now=context.clock(),
        )
        drifted = [(r.workspace_id, r.id, r.agent_id, r.last_session_id) for r in changed]
    # Their observed hash or failed apply changed: this process forgets those runtimes (other
    # processes' cached identities of them are checked against what each heartbeat reports).
    for workspace_id, runtime_id, agent_id, session_id in drifted:
        context.hot.forget_runtime(workspace_id, runtime_id, agent_id, session_id)
    return {"accepted": accepted}


@router.post("/telemetry", response_model=responses.Accepted)
def telemetry(body: schemas.TelemetryRequest, context: Context, token: Token) -> dict[str, int]:
    """Store telemetry records."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        accepted = runtime_service.record_telemetry(
            session,
            caller=caller,
            workspace_id=body.workspace_id,
            records=body.records,
            now=context.clock(),
        )
    return {"accepted": accepted}


@router.post("/evidence", response_model=responses.Accepted)
def evidence(body: schemas.EvidenceRequest, context: Context, token: Token) -> dict[str, int]:
    """Store evidence references."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        accepted = runtime_service.record_evidence(
            session,
            caller=caller,
            workspace_id=body.workspace_id,
            evidence_refs=body.evidence_refs,
            now=context.clock(),
        )
    return {"accepted": accepted}


def _register_session(
    body: schemas.SessionRegisterRequest, context: AppContext, token: str | None
) -> dict[str, bool]:
    details = {
        key: value
        for key, value in {
            "client_type": body.client_type,
            "lane": body.lane,
            "wu_id": body.wu_id,
            "capabilities": body.capabilities,
            "started_at": body.started_at,
            "metadata": body.metadata,
        }.items()
        if value is not None
    }
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        runtime_service.register_session(
            session,
            caller=caller,
            registration=runtime_service.SessionRegistration(
                workspace_id=body.workspace_id,
                session_id=body.session_id,
                agent_id=body.agent_id,
                agent_type=body.agent_type,
                agent_version=body.agent_version,
                host_id=body.host_id,
                details=details,
            ),
            now=context.clock(),
        )
    return {"ok": True}


@router.post("/sessions/register", response_model=responses.Acknowledged)
def register_session(
    body: schemas.SessionRegisterRequest, context: Context, token: Token
) -> dict[str, bool]:
    """Register a session of a runtime (and the runtime, if new)."""
    return _register_session(body, context, token)


@router.post("/sessions", response_model=responses.Acknowledged)
def register_session_alias(
    body: schemas.SessionRegisterRequest, context: Context, token: Token
) -> dict[str, bool]:
    """The same as `/sessions/register`."""
    return _register_session(body, context, token)


@router.post("/sessions/deregister", response_model=responses.Acknowledged)
def deregister_session(
    body: schemas.SessionDeregisterRequest, context: Context, token: Token
) -> dict[str, bool]:
    """Mark a session ended."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        runtime_service.deregister_session(
            session,
            caller=caller,
            workspace_id=body.workspace_id,
            session_id=body.session_id,
            reason=body.reason,
            now=context.clock(),
        )
    return {"ok": True}


@router.post("/authenticate", response_model=responses.RuntimeToken)
def authenticate(
    body: schemas.AuthenticateRequest, context: Context, token: Token
) -> dict[str, str]:
    """Exchange a workspace key (or runtime credential) for a fresh runtime credential."""
    with context.database.unit_of_work() as session:
        caller = authenticate_runtime(session, token=token)
        runtime, credential = runtime_service.authenticate_agent(
            session,
            caller=caller,
            workspace_id=body.workspace_id,
            org_id=body.org_id,
            agent_id=body.agent_id,
            now=context.clock(),
        )
    # The runtime's previous credential stops working in this process at once.
    context.hot.forget_runtime(
        runtime.workspace_id, runtime.id, runtime.agent_id, runtime.last_session_id
    )
    return {
        "workspace_id": runtime.workspace_id,
        "org_id": body.org_id,
        "agent_id": runtime.agent_id,
        "token": credential,
    }


@router.post("/enroll", response_model=responses.Enrolled)
def enroll(body: schemas.EnrollRequest, context: Context) -> dict[str, Any]:
    """Exchange an enrollment token for this runtime's own credential (fleetplane extension)."""
    now = context.clock()
    with context.database.unit_of_work() as session:
        workspace, runtime, credential = runtime_service.enroll(
            session,
            enrollment=runtime_service.Enrollment(
                enrollment_token=body.enrollment_token,
                agent_id=body.agent_id,
                runtime_version=body.runtime_version,
                host_id=body.host_id,
                labels=body.labels,
            ),
            now=now,
        )
        # The mode the runtime starts from is the current one: an expired dev-override returns
        # to its previous mode first, as on every other read (SPEC 3.7).
        workspace_service.lapse_dev_override(session, workspace_id=workspace.id, now=now)
        policy_mode = workspace.policy_mode
    context.hot.forget_runtime(workspace.id, runtime.id, runtime.agent_id, runtime.last_session_id)
    return {
        "runtime_id": runtime.id,
        "credential": credential,
        "workspace_id": workspace.id,
        "org_id": workspace.org_id,
        "control_plane": control_plane_block(
            public_url=context.settings.public_url,
            org_id=workspace.org_id,
            workspace_id=workspace.id,
            sync_interval=context.settings.heartbeat_interval_seconds,
            policy_mode=policy_mode,
        ),
    }
