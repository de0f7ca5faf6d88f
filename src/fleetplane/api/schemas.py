"""Request bodies of the runtime and operator surfaces, as documented in the OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RuntimeBody(BaseModel):
    """SDK bodies: fields fleetplane does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class HeartbeatHealth(RuntimeBody):
    busy: bool | None = None
    stalled: bool | None = None
    last_progress_at: str | None = None


class HeartbeatRequest(RuntimeBody):
    workspace_id: str | None = None
    session_id: str | None = Field(default=None, max_length=200)
    agent_id: str | None = Field(default=None, max_length=200)
    wu_id: str | None = None
    health: HeartbeatHealth | None = None
    runtime_version: str | None = Field(default=None, max_length=100)
    config_hash: str | None = None
    # fleetplane extension: the hash the runtime failed to apply, and why.
    config_apply_failed_hash: str | None = None
    config_apply_error: str | None = Field(default=None, max_length=2000)


class WorkspaceScopedRequest(RuntimeBody):
    workspace_id: str | None = None


class AuthenticateRequest(RuntimeBody):
    workspace_id: str
    org_id: str
    agent_id: str | None = Field(default=None, max_length=200)
    token_hint: str | None = None


class EventsRequest(RuntimeBody):
    workspace_id: str | None = None
    agent_id: str | None = None
    events: list[Any]


class TelemetryRequest(RuntimeBody):
    workspace_id: str | None = None
    records: list[Any]


class EvidenceRequest(RuntimeBody):
    workspace_id: str | None = None
    evidence_refs: list[Any]


class SessionRegisterRequest(RuntimeBody):
    workspace_id: str | None = None
    session_id: str = Field(min_length=1, max_length=200)
    agent_id: str | None = Field(default=None, max_length=200)
    agent_type: str | None = Field(default=None, max_length=200)
    agent_version: str | None = Field(default=None, max_length=100)
    host_id: str | None = Field(default=None, max_length=200)
    client_type: str | None = None
    lane: str | None = None
    wu_id: str | None = None
    capabilities: Any = None
    started_at: str | None = None
    metadata: Any = None


class SessionDeregisterRequest(RuntimeBody):
    workspace_id: str | None = None
    session_id: str = Field(min_length=1, max_length=200)
    ended_at: str | None = None
    reason: str | None = Field(default=None, max_length=200)


class EnrollRequest(RuntimeBody):
    enrollment_token: str = Field(min_length=1, max_length=200)
    agent_id: str = Field(min_length=1, max_length=200)
    runtime_version: str | None = Field(default=None, max_length=100)
    host_id: str | None = Field(default=None, max_length=200)
    labels: dict[str, str] | None = None


# Config revision numbers are a 32-bit integer column on PostgreSQL.
MAX_REVISION = 2**31 - 1


class OperatorBody(BaseModel):
    """Operator bodies are strict: an unknown field is a mistake worth reporting."""

    model_config = ConfigDict(extra="forbid")


class OrgCreate(OperatorBody):
    name: str = Field(min_length=1, max_length=200)


class WorkspaceCreate(OperatorBody):
    name: str = Field(min_length=1, max_length=200)
    policyMode: str | None = None  # noqa: N815 - the API's field names are camelCase
    devOverrideUntil: datetime | None = None  # noqa: N815


class WorkspaceUpdate(OperatorBody):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    policyMode: str | None = None  # noqa: N815
    devOverrideUntil: datetime | None = None  # noqa: N815


class EnrollmentCreate(OperatorBody):
    expiresInSeconds: int | None = None  # noqa: N815
    maxUses: int | None = None  # noqa: N815


class RuntimeCreate(OperatorBody):
    agentId: str = Field(min_length=1, max_length=200)  # noqa: N815
    labels: dict[str, str] | None = None


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case error code")
    message: str = Field(description="a human sentence")
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer (SPEC 4.1)."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a router can answer."""
    descriptions = {
        400: "unreadable input",
        401: "no or bad credential",
        403: "credential valid but not allowed",
        404: "not found or not visible",
        409: "conflict with the current state",
        413: "body over the size limit",
        422: "input breaks a rule",
        429: "rate limited (see Retry-After)",
        503: "database unavailable",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses
    }


OPERATOR_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
RUNTIME_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 503)
