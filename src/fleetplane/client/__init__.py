"""Python runtime client for fleetplane (LumenFlow control-plane SDK v1 wire contract).

Typical use::

    from fleetplane.client import Client

    with Client("https://fleet.example.com") as runtime:
        runtime.enroll(enrollment_token, agent_id="build-7", runtime_version="3.12.6")
        beat = runtime.heartbeat(session_id)
        desired = runtime.pull_config()          # GET with If-None-Match; 304 -> not_modified
        runtime.report_applied(desired.config_hash)

``AsyncClient`` offers the same operations for asyncio. The client talks HTTP only; it shares
with the server nothing but the pure config-hash and policy-merge functions of
``fleetplane.domain``. The ``fleetplane agent`` command lives in :mod:`fleetplane.client.agent`.
"""

from fleetplane.client._async import AsyncClient
from fleetplane.client._sync import Client
from fleetplane.client.errors import (
    APIError,
    AuthError,
    BadRequestError,
    ClientError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TightenOnlyViolationError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from fleetplane.client.events import (
    config_apply_failed_event,
    iso_timestamp,
    workspace_updated_event,
    workspace_warning_event,
)
from fleetplane.client.models import (
    Authentication,
    ConfigPull,
    Enrollment,
    HeartbeatResult,
    PolicyPull,
)
from fleetplane.client.policy import (
    PolicyMerge,
    PolicyRule,
    PolicySet,
    apply_policy_mode,
    merge_local_policy,
    tighten_only_warning_event,
)
from fleetplane.client.schedule import HeartbeatSchedule, is_retryable
from fleetplane.client.workspace import (
    dump_workspace_yaml,
    read_workspace_file,
    workspace_config_hash,
    write_workspace_file,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthError",
    "Authentication",
    "BadRequestError",
    "Client",
    "ClientError",
    "ConfigPull",
    "ConflictError",
    "Enrollment",
    "ForbiddenError",
    "HeartbeatResult",
    "HeartbeatSchedule",
    "NotFoundError",
    "PayloadTooLargeError",
    "PolicyMerge",
    "PolicyPull",
    "PolicyRule",
    "PolicySet",
    "RateLimitedError",
    "ServerError",
    "TightenOnlyViolationError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "apply_policy_mode",
    "config_apply_failed_event",
    "dump_workspace_yaml",
    "is_retryable",
    "iso_timestamp",
    "merge_local_policy",
    "read_workspace_file",
    "tighten_only_warning_event",
    "workspace_config_hash",
    "workspace_updated_event",
    "workspace_warning_event",
    "write_workspace_file",
]
