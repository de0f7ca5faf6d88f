"""Typed results of the runtime surface calls (SPEC 4.2), parsed from the SDK's snake_case JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetplane.domain.policy import PolicySet, parse_policy_set

__all__ = [
    "Authentication",
    "ConfigPull",
    "Enrollment",
    "HeartbeatResult",
    "PolicyPull",
]


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What ``/enroll`` returns: this runtime's own credential and where it belongs."""

    runtime_id: str
    credential: str = field(repr=False)
    workspace_id: str
    org_id: str
    # The block a runtime writes into workspace.yaml (endpoint, org_id, project_id, ...).
    control_plane: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Authentication:
    """What ``/authenticate`` returns: a fresh runtime credential for ``agent_id``."""

    workspace_id: str
    org_id: str
    agent_id: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """The heartbeat answer: when to beat next and the desired state to compare against."""

    status: str
    server_time: str
    next_heartbeat_ms: int
    # The desired workspace config hash: a runtime whose own hash differs should pull.
    config_hash: str
    policy_mode: str


@dataclass(frozen=True, slots=True)
class ConfigPull:
    """The desired workspace config; ``not_modified`` when the server answered 304."""

    workspace_id: str
    control_plane: dict[str, Any]
    config: Any
    config_hash: str
    config_revision: int
    etag: str | None
    not_modified: bool
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class PolicyPull:
    """The effective policy set; ``not_modified`` when the server answered 304."""

    default_decision: str
    rules: list[dict[str, Any]]
    etag: str | None
    not_modified: bool
    body: dict[str, Any] = field(repr=False)

    @property
    def policy_set(self) -> PolicySet:
        """The pulled set as the domain type the authority-mode merge takes."""
        return parse_policy_set(self.body)
