"""Local policy merging under the workspace's authority mode (SPEC 3.7), runtime side.

The merge itself is :func:`fleetplane.domain.policy.apply_policy_mode`, the one implementation
the server's preview endpoint also uses and that reproduces
``shared/vectors/authority-mode-merge.json``. This module adapts it to the client: it accepts
wire-shaped dicts as well as :class:`PolicySet`, raises the client's own error tree, and turns a
``tighten-only`` rejection into a ``workspace_warning`` event the runtime can report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetplane.client.errors import ClientError, TightenOnlyViolationError
from fleetplane.client.events import iso_timestamp, workspace_warning_event
from fleetplane.domain import policy as _domain
from fleetplane.domain.errors import Invalid, TightenOnlyViolation
from fleetplane.domain.policy import PolicyRule, PolicySet

__all__ = [
    "PolicyMerge",
    "PolicyRule",
    "PolicySet",
    "apply_policy_mode",
    "merge_local_policy",
    "tighten_only_warning_event",
]

PolicyLike = PolicySet | Mapping[str, Any]


def _as_policy_set(value: PolicyLike, what: str) -> PolicySet:
    if isinstance(value, PolicySet):
        return value
    try:
        return _domain.parse_policy_set(value)
    except Invalid as error:
        raise ClientError(f"{what} policy set: {error.message}", code=error.code) from error


def apply_policy_mode(
    *,
    mode: str,
    workspace_id: str,
    remote: PolicyLike,
    local: PolicyLike | None,
    timestamp: str | None = None,
) -> tuple[PolicySet, list[dict[str, Any]]]:
    """The effective set and dev-override warnings; raises TightenOnlyViolationError."""
    try:
        return _domain.apply_policy_mode(
            mode=mode,
            workspace_id=workspace_id,
            remote=_as_policy_set(remote, "remote"),
            local=None if local is None else _as_policy_set(local, "local"),
            timestamp=timestamp or iso_timestamp(),
        )
    except TightenOnlyViolation as error:
        details = error.details if isinstance(error.details, dict) else {}
        raise TightenOnlyViolationError(
            error.message, rule_id=details.get("rule_id"), workspace_id=workspace_id
        ) from error
    except Invalid as error:
        raise ClientError(error.message, code=error.code, details=error.details) from error


def tighten_only_warning_event(
    error: TightenOnlyViolationError, *, timestamp: str, session_id: str | None = None
) -> dict[str, Any]:
    """The ``workspace_warning`` event that reports a rejected local loosening."""
    return workspace_warning_event(
        error.message,
        timestamp=timestamp,
        session_id=session_id,
        code=error.code,
        rule_id=error.rule_id,
    )


@dataclass(frozen=True, slots=True)
class PolicyMerge:
    """The policy a runtime enforces, and the warning events it should send about it."""

    effective: PolicySet
    events: list[dict[str, Any]] = field(default_factory=list)
    # Set when tighten-only refused the local set; the runtime then enforces the remote set.
    rejection: TightenOnlyViolationError | None = None


def merge_local_policy(
    *,
    mode: str,
    workspace_id: str,
    remote: PolicyLike,
    local: PolicyLike | None,
    timestamp: str | None = None,
    session_id: str | None = None,
) -> PolicyMerge:
    """Merge like :func:`apply_policy_mode`, but a tighten-only rejection becomes a warning.

    On rejection the cloud set is enforced unchanged (the local set is dropped whole, never
    partly applied) and the single event is a ``workspace_warning`` naming the loosening.
    """
    moment = timestamp or iso_timestamp()
    try:
        effective, events = apply_policy_mode(
            mode=mode, workspace_id=workspace_id, remote=remote, local=local, timestamp=moment
        )
    except TightenOnlyViolationError as rejection:
        warning = tighten_only_warning_event(rejection, timestamp=moment, session_id=session_id)
        return PolicyMerge(_as_policy_set(remote, "remote"), [warning], rejection)
    if session_id is not None:
        events = [{**event, "session_id": session_id} for event in events]
    return PolicyMerge(effective, events)
