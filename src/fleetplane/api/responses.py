"""Response bodies of the JSON API, as documented in the OpenAPI (SPEC 4).

Field names are the wire names: camelCase on the operator and fleet surfaces, snake_case on the
runtime surface, in policy sets and in the `fleet/config` fields the spec keeps (SPEC 4.1).

Handlers build plain dicts and name one of these models as the route's `response_model`, so
FastAPI validates and serialises the dict against it. Every model refuses unknown keys: a key a
handler sends but its model lacks fails the request in any test of the route instead of
silently vanishing from the answer. Routes that answer through `json_with_etag` (the fleet page,
`fleet/config` and the runtime pulls) hand FastAPI a finished response: for them the model is
documentation only and costs nothing per request; the OpenAPI tests check their real answers.
"""

# ruff: noqa: N815 - field names are the API's camelCase wire names

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from fleetplane.domain.fleet import Drift, DriftReason, Health
from fleetplane.domain.versions import Compatibility
from fleetplane.services.alerts import Threshold
from fleetplane.services.history import TransitionKind
from fleetplane.services.webhooks import DeliveryStatus

# The value sets of domain/policy.py and services/access.py (tests/api/test_openapi.py pins them).
PolicyMode = Literal["authoritative", "tighten-only", "dev-override"]
Decision = Literal["allow", "deny"]
OrgRole = Literal["owner", "admin", "member"]
WorkspaceRole = Literal["admin", "operator", "viewer"]
AccessLevel = Literal["read", "operate", "admin"]

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""ISO 8601 in UTC with a `Z` suffix, as the API writes every time."""


class ResponseBody(BaseModel):
    """A response body with exactly these fields."""

    model_config = ConfigDict(extra="forbid")


ItemT = TypeVar("ItemT", bound=ResponseBody)


class Page(ResponseBody, Generic[ItemT]):
    """One page of a list (SPEC 4.1)."""

    items: list[ItemT]
    nextCursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


# --- orgs and workspaces ---------------------------------------------------------------------


class OrgRead(ResponseBody):
    id: str
    name: str


class OrgMembershipRead(ResponseBody):
    """An org the caller reaches, with its role there (null when reached via a workspace)."""

    id: str
    name: str
    role: OrgRole | None


class OrgList(Page[OrgMembershipRead]):
    """The orgs the caller reaches."""


class ConfigRevisionRef(ResponseBody):
    """A config revision by number and hash (SPEC 3.3)."""

    number: int
    hash: str


class WorkspaceRead(ResponseBody):
    id: str
    orgId: str
    name: str
    policyMode: PolicyMode
    devOverrideUntil: Timestamp | None
    configRevision: ConfigRevisionRef


class WorkspaceList(Page[WorkspaceRead]):
    """Workspaces the caller can read."""


# --- desired state: config and policies ------------------------------------------------------


class ConfigChange(ResponseBody):
    """The revision a config write or rollback made current."""

    configRevision: ConfigRevisionRef


class ConfigRevisionRead(ResponseBody):
    number: int
    hash: str
    author: str | None
    createdAt: Timestamp


class ConfigRevisionList(Page[ConfigRevisionRead]):
    """Config revisions, newest first."""


class ConfigRevisionDocument(ConfigRevisionRead):
    """A config revision with its document exactly as stored."""

    document: dict[str, Any]


class ConfigDiff(ResponseBody):
    from_: int = Field(alias="from")
    to: int
    diff: str = Field(description="a unified diff of the two documents")


def _is_none(value: object) -> bool:
    return value is None


def _string_left_out_when_none(schema: JsonDict) -> None:
    # The wire has no null here: the key is absent instead.
    schema.pop("anyOf", None)
    schema.pop("default", None)
    schema["type"] = "string"


class PolicyRuleRead(ResponseBody):
    id: str
    decision: Decision
    reason: str | None = Field(
        default=None,
        exclude_if=_is_none,
        json_schema_extra=_string_left_out_when_none,
        description="left out when the rule has none",
    )


class PolicySetRead(ResponseBody):
    """A policy set (SPEC 3.6); rules in order."""

    default_decision: Decision
    rules: list[PolicyRuleRead]


class PolicyWarningEvent(ResponseBody):
    """A `workspace_warning` kernel event a dev-override loosening records."""

    schema_version: int
    kind: Literal["workspace_warning"]
    timestamp: Timestamp
    message: str


class PolicyPreview(ResponseBody):
    """What a runtime with a local policy set would run, and the warnings it would record."""

    effective: PolicySetRead
    events: list[PolicyWarningEvent]


# --- credentials -----------------------------------------------------------------------------


class ControlPlaneAuth(ResponseBody):
    token_env: str


class ControlPlaneBlock(ResponseBody):
    """The `control_plane` block of a runtime's workspace.yaml (SDK v1, snake_case)."""

    endpoint: str
    org_id: str
    project_id: str
    sync_interval: int = Field(description="seconds")
    policy_mode: PolicyMode
    auth: ControlPlaneAuth


class WorkspaceYaml(ResponseBody):
    control_plane: ControlPlaneBlock


class SdkEnrollment(ResponseBody):
    endpoint: str
    orgId: str
    projectId: str
    tokenEnv: str
    workspaceYaml: WorkspaceYaml


class ApiKeyIssued(ResponseBody):
    """A new workspace key (shown once) and how to connect a runtime with it."""

    apiKey: str
    connectCommand: str
    sdkEnrollment: SdkEnrollment


class EnrollmentIssued(ResponseBody):
    """A new enrollment token (shown once)."""

    id: str
    token: str
    expiresAt: Timestamp
    maxUses: int | None


class EnrollmentRead(ResponseBody):
    """An enrollment token without its secret."""

    id: str
    prefix: str
    expiresAt: Timestamp
    maxUses: int | None
    uses: int
    revokedAt: Timestamp | None
    createdBy: str | None
    createdAt: Timestamp


class EnrollmentList(Page[EnrollmentRead]):
    """The workspace's enrollment tokens."""


class RuntimeRegistered(ResponseBody):
    """A pre-registered runtime and its credential (shown once)."""

    runtimeId: str
    credential: str
    connectCommand: str


class AuditEntryRead(ResponseBody):
    id: int
    actor: str
    action: str
    target: str
    beforeHash: str | None
    afterHash: str | None
    createdAt: Timestamp


class AuditLog(Page[AuditEntryRead]):
    """Audit entries, newest first."""


# --- members and accounts --------------------------------------------------------------------


class OrgMemberRead(ResponseBody):
    userId: str
    email: str
    role: OrgRole


class OrgMemberList(Page[OrgMemberRead]):
    """The org's members."""


class WorkspaceMemberRead(ResponseBody):
    userId: str
    email: str
    role: WorkspaceRole


class WorkspaceMemberList(Page[WorkspaceMemberRead]):
    """The workspace's members."""


class OrgMemberRole(ResponseBody):
    userId: str
    role: OrgRole


class WorkspaceMemberRole(ResponseBody):
    userId: str
    role: WorkspaceRole


class UserRead(ResponseBody):
    id: str
    email: str
    superuser: bool


class SignedIn(ResponseBody):
    """The signed-in user and the CSRF token its session's writes must send."""

    user: UserRead
    csrfToken: str


class WorkspaceAccessRead(ResponseBody):
    id: str
    orgId: str
    name: str
    access: AccessLevel


class Me(UserRead):
    """The caller and what it can reach."""

    orgs: list[OrgMembershipRead]
    workspaces: list[WorkspaceAccessRead]


class OperatorTokenRead(ResponseBody):
    id: str
    name: str
    prefix: str
    createdAt: Timestamp


class OperatorTokenList(Page[OperatorTokenRead]):
    """The caller's operator tokens."""


class OperatorTokenIssued(ResponseBody):
    """A new operator token (shown once)."""

    id: str
    name: str
    prefix: str
    token: str


# --- the runtime surface (SDK v1, snake_case) ------------------------------------------------


class HeartbeatAck(ResponseBody):
    status: Literal["ok"]
    server_time: Timestamp
    next_heartbeat_ms: int
    config_hash: str = Field(description="the desired config hash")
    policy_mode: PolicyMode


class RuntimeConfig(ResponseBody):
    """The desired workspace config a runtime pulls."""

    id: str = Field(description="the workspace id")
    control_plane: ControlPlaneBlock
    config: dict[str, Any] = Field(description="the config document exactly as stored")
    config_hash: str
    config_revision: int


class Accepted(ResponseBody):
    accepted: int = Field(description="how many were stored")


class Acknowledged(ResponseBody):
    ok: bool


class RuntimeToken(ResponseBody):
    workspace_id: str
    org_id: str
    agent_id: str
    token: str = Field(description="a fresh runtime credential (`fp_rt_`)")


class Enrolled(ResponseBody):
    runtime_id: str
    credential: str
    workspace_id: str
    org_id: str
    control_plane: ControlPlaneBlock


# --- the fleet surface -----------------------------------------------------------------------


class FleetRuntime(ResponseBody):
    """One runtime with its health, compatibility and drift (SPEC 3)."""

    id: str
    agentId: str
    hostId: str | None
    labels: dict[str, str]
    version: str | None
    compatibility: Compatibility
    health: Health
    lastHeartbeatAt: Timestamp | None
    heartbeatAgeSeconds: int | None
    drift: Drift
    driftReason: DriftReason | None
    applyFailedMessage: str | None
    observedConfigHash: str | None
    observedConfigRevision: int | None
    revisionsBehind: int | None = Field(description="null when the observed hash is unknown")
    enrolledAt: Timestamp
    archivedAt: Timestamp | None
    lastSessionId: str | None
    warnings24h: int


class FleetSummary(ResponseBody):
    """Counts over every runtime the filters select (SPEC 3.5)."""

    total: int
    active: int
    stale: int
    dormant: int
    never: int
    aligned: int
    needsReconcile: int
    upgradeRequired: int
    awaitingSync: int
    archived: int


class DesiredConfigRevision(ResponseBody):
    number: int
    hash: str
    updatedAt: Timestamp


class DesiredState(ResponseBody):
    configRevision: DesiredConfigRevision
    policyMode: PolicyMode
    policyRevision: str
    devOverrideUntil: Timestamp | None


class Rollout(ResponseBody):
    """How far the current config revision has spread."""

    revision: int
    onRevision: int
    expected: int
    startedAt: Timestamp
    runningSeconds: int


class FleetPage(ResponseBody):
    """One page of the fleet inventory (SPEC 4.3)."""

    workspaceId: str
    generatedAt: Timestamp
    runtimes: list[FleetRuntime]
    summary: FleetSummary
    desiredState: DesiredState
    rollout: Rollout
    nextCursor: str | None


class ActivePolicy(ResponseBody):
    id: str
    decision: Decision
    reason: str | None
    scope: Literal["org", "workspace"]


class VersionRequirements(ResponseBody):
    minimumVersion: str
    fullSyncVersion: str


class FleetConfig(ResponseBody):
    """Where and what runtimes pull (SPEC 4.3)."""

    workspaceId: str
    orgId: str
    distribution_mode: Literal["always_pull"]
    config_path: str
    policies_path: str
    configRevision: ConfigRevisionRef
    policyMode: PolicyMode
    policyRevision: str
    defaultDecision: Decision
    activePolicies: list[ActivePolicy]
    compatibility: VersionRequirements


# --- status history, alerts and webhooks -----------------------------------------------------


class RuntimeStatus(ResponseBody):
    """A runtime's health and drift as the sweeper last saw them, and since when."""

    health: Health
    healthSince: Timestamp
    drift: Drift
    driftReason: DriftReason | None
    driftSince: Timestamp
    sweptAt: Timestamp


class Transition(ResponseBody):
    """One change of a runtime's health, drift or life cycle."""

    id: int
    kind: TransitionKind
    from_: str | None = Field(alias="from", description="null for the first state")
    to: str
    reason: str | None
    at: Timestamp
    detectedAt: Timestamp
    until: Timestamp | None = Field(description="null while the state lasts")
    durationSeconds: int
    ongoing: bool


class RuntimeHistory(ResponseBody):
    """A runtime's transitions, newest first."""

    runtimeId: str
    agentId: str
    archived: bool
    archivedAt: Timestamp | None
    current: RuntimeStatus | None = Field(description="null before the first sweep")
    items: list[Transition]
    nextCursor: str | None


class AlertThresholds(ResponseBody):
    """The workspace's thresholds (null or false: off) and which are crossed."""

    alignedShareBelow: float | None
    dormantShareAbove: float | None
    upgradeRequired: bool
    firing: list[Threshold]
    updatedAt: Timestamp | None


class ThresholdCrossingRead(ResponseBody):
    id: int
    threshold: Threshold
    state: Literal["firing", "resolved"]
    value: float
    limit: float | None
    at: Timestamp


class ThresholdCrossingList(Page[ThresholdCrossingRead]):
    """Threshold crossings, newest first."""


class WebhookRead(ResponseBody):
    """A webhook without its secret."""

    id: str
    url: str
    events: list[str]
    active: bool
    createdBy: str | None
    createdAt: Timestamp
    updatedAt: Timestamp


class WebhookList(Page[WebhookRead]):
    """The workspace's webhooks."""


class WebhookCreated(WebhookRead):
    """A new webhook with its signing secret (shown once)."""

    secret: str


class DeliveryQueued(ResponseBody):
    deliveryId: str = Field(description="the queued delivery, as listed in the delivery log")
    status: DeliveryStatus


class DeliveryAttempt(ResponseBody):
    number: int
    at: Timestamp
    statusCode: int | None
    error: str | None
    durationMs: int


class DeliveryRead(ResponseBody):
    """A delivery with its attempts."""

    id: str
    event: str
    status: DeliveryStatus
    attempts: int
    createdAt: Timestamp
    nextAttemptAt: Timestamp | None
    lastAttemptAt: Timestamp | None
    lastStatusCode: int | None
    lastError: str | None
    deliveredAt: Timestamp | None
    payload: dict[str, Any] = Field(description="the JSON body sent to the webhook")
    attemptLog: list[DeliveryAttempt]


class DeliveryList(Page[DeliveryRead]):
    """A webhook's deliveries, newest first."""
