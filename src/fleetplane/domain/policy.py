"""Policy sets: parsing, the org/workspace scope merge and the authority-mode merge.

A policy set is ``{default_decision: allow|deny, rules: [{id, decision, reason?}]}`` and keeps
those snake_case names on every surface (SPEC 3.6).

Two merges live here:

* ``merge_scopes`` (SPEC 3.6) builds the effective set a runtime pulls from the org-scoped and
  workspace-scoped sets. Deny wins on a shared rule id and on the default. Rule order of the
  result: the org's rules in the org's order (a rule the workspace also names keeps the org's
  position), then the rules only the workspace names, in the workspace's order.
* ``apply_policy_mode`` (SPEC 3.7) is what a runtime does with the pulled set and its own local
  set under the workspace's authority mode. It reproduces the LumenFlow SDK's
  ``applyPolicyMode`` as pinned by ``shared/vectors/authority-mode-merge.json``:

  - ``authoritative``, or no local set: the remote set, unchanged, and no events.
  - otherwise the local ``default_decision`` is compared with the remote one, then each local
    rule, in local order, with the decision it would override: the rule of the same id merged so
    far, or the remote ``default_decision`` for an id nobody named yet. Going from deny to allow
    is a loosening: ``tighten-only`` raises ``TightenOnlyViolation`` at the first one,
    ``dev-override`` records one ``workspace_warning`` event per loosening, in that order.
  - the effective set takes the local ``default_decision``; its rules are the remote rules in
    remote order, each replaced whole (reason included) by a local rule of the same id, followed
    by the local-only rules in local order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetplane.domain.errors import Invalid, TightenOnlyViolation

ALLOW = "allow"
DENY = "deny"
DECISIONS = (ALLOW, DENY)

AUTHORITATIVE = "authoritative"
TIGHTEN_ONLY = "tighten-only"
DEV_OVERRIDE = "dev-override"
POLICY_MODES = (AUTHORITATIVE, TIGHTEN_ONLY, DEV_OVERRIDE)

MAX_RULES = 1000
MAX_RULE_ID_LENGTH = 200

_SET_FIELDS = frozenset({"default_decision", "rules"})
_RULE_FIELDS = frozenset({"id", "decision", "reason"})

# Events follow the LumenFlow kernel event envelope; only version 1 exists.
_EVENT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule: the decision for the action named by ``id``."""

    id: str
    decision: str
    reason: str | None = None

    def to_dict(self) -> dict[str, str]:
        """Return the wire shape, without ``reason`` when there is none."""
        wire = {"id": self.id, "decision": self.decision}
        if self.reason is not None:
            wire["reason"] = self.reason
        return wire


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A default decision and the rules that override it, in order."""

    default_decision: str
    rules: tuple[PolicyRule, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the wire shape ``{default_decision, rules}``."""
        return {
            "default_decision": self.default_decision,
            "rules": [rule.to_dict() for rule in self.rules],
        }


EMPTY_ALLOW = PolicySet(ALLOW, ())


def _refuse(path: str, message: str) -> Invalid:
    where = f"{path}: " if path else ""
    return Invalid(f"{where}{message}", code="invalid_policy_set", details={"path": path})


def _refuse_unknown_fields(value: Mapping[Any, Any], allowed: frozenset[str], prefix: str) -> None:
    # Sorted so the same bad document always names the same field.
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise _refuse(f"{prefix}{unknown[0]}", "unknown field")


def _parse_decision(value: object, path: str) -> str:
    if value not in DECISIONS:
        raise _refuse(path, 'must be "allow" or "deny"')
    return str(value)


def _parse_rule(value: object, path: str) -> PolicyRule:
    if not isinstance(value, Mapping):
        raise _refuse(path, "must be an object")
    _refuse_unknown_fields(value, _RULE_FIELDS, f"{path}.")
    rule_id = value.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise _refuse(f"{path}.id", "must be a non-empty string")
    if len(rule_id) > MAX_RULE_ID_LENGTH:
        raise _refuse(f"{path}.id", f"must be at most {MAX_RULE_ID_LENGTH} characters")
    decision = _parse_decision(value.get("decision"), f"{path}.decision")
    reason = value.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _refuse(f"{path}.reason", "must be a string or null")
    return PolicyRule(rule_id, decision, reason)


def parse_policy_set(value: object) -> PolicySet:
    """Validate a wire-shaped policy set, raising ``Invalid`` that names the offending path."""
    if not isinstance(value, Mapping):
        raise _refuse("", "a policy set must be an object")
    _refuse_unknown_fields(value, _SET_FIELDS, "")
    default_decision = _parse_decision(value.get("default_decision"), "default_decision")
    raw_rules = value.get("rules", [])
    if not isinstance(raw_rules, list):
        raise _refuse("rules", "must be a list")
    if len(raw_rules) > MAX_RULES:
        raise _refuse("rules", f"must hold at most {MAX_RULES} rules, not {len(raw_rules)}")
    first_index: dict[str, int] = {}
    rules: list[PolicyRule] = []
    for index, raw_rule in enumerate(raw_rules):
        rule = _parse_rule(raw_rule, f"rules[{index}]")
        if rule.id in first_index:
            raise _refuse(
                f"rules[{index}].id",
                f"rule id {rule.id!r} is already named by rules[{first_index[rule.id]}]",
            )
        first_index[rule.id] = index
        rules.append(rule)
    return PolicySet(default_decision, tuple(rules))


def _stricter(org_rule: PolicyRule, workspace_rule: PolicyRule) -> PolicyRule:
    # The whole winning rule is kept so its reason travels with its decision.
    if org_rule.decision == DENY and workspace_rule.decision == ALLOW:
        return org_rule
    return workspace_rule


def merge_scopes(org: PolicySet, workspace: PolicySet) -> PolicySet:
    """Return the effective set: org rules in org order, then workspace-only rules; deny wins."""
    merged = {rule.id: rule for rule in org.rules}
    for rule in workspace.rules:
        shared = merged.get(rule.id)
        merged[rule.id] = rule if shared is None else _stricter(shared, rule)
    either_denies = DENY in (org.default_decision, workspace.default_decision)
    return PolicySet(DENY if either_denies else ALLOW, tuple(merged.values()))


def active_policies(org: PolicySet, workspace: PolicySet) -> list[dict[str, Any]]:
    """List every rule of both scopes, org first, each with its ``scope`` and ``reason``."""
    return [
        {"id": rule.id, "decision": rule.decision, "reason": rule.reason, "scope": scope}
        for scope, policy_set in (("org", org), ("workspace", workspace))
        for rule in policy_set.rules
    ]


def _is_loosening(remote_decision: str, local_decision: str) -> bool:
    return remote_decision == DENY and local_decision == ALLOW


def _warning_event(message: str, timestamp: str) -> dict[str, Any]:
    return {
        "schema_version": _EVENT_SCHEMA_VERSION,
        "kind": "workspace_warning",
        "timestamp": timestamp,
        "message": message,
    }


def apply_policy_mode(
    *,
    mode: str,
    workspace_id: str,
    remote: PolicySet,
    local: PolicySet | None,
    timestamp: str,
) -> tuple[PolicySet, list[dict[str, Any]]]:
    """Merge a runtime's local set into the pulled one under ``mode``, as LumenFlow does."""
    if mode not in POLICY_MODES:
        raise Invalid(
            f"unknown policy mode {mode!r}; expected one of {', '.join(POLICY_MODES)}",
            code="invalid_policy_mode",
            details={"path": "mode"},
        )
    if mode == AUTHORITATIVE or local is None:
        return remote, []

    events: list[dict[str, Any]] = []

    def loosened(target: str, rule_id: str | None) -> None:
        if mode == TIGHTEN_ONLY:
            raise TightenOnlyViolation(
                f"tighten-only mode rejected local policy loosening for {target}"
                f" in workspace {workspace_id}",
                details={"workspace_id": workspace_id, "rule_id": rule_id},
            )
        events.append(
            _warning_event(
                f"dev-override allowed local policy loosening for {target}"
                f" in workspace {workspace_id}",
                timestamp,
            )
        )

    if _is_loosening(remote.default_decision, local.default_decision):
        loosened("default_decision", None)

    # Dict order is insertion order, which gives the SDK's rule order: a replaced remote rule
    # keeps its place, a local-only rule goes to the end.
    merged = {rule.id: rule for rule in remote.rules}
    for rule in local.rules:
        shared = merged.get(rule.id)
        # An id the remote set does not name is governed by the remote default.
        overridden = remote.default_decision if shared is None else shared.decision
        if _is_loosening(overridden, rule.decision):
            loosened(f"rule {rule.id}", rule.id)
        merged[rule.id] = rule
    return PolicySet(local.default_decision, tuple(merged.values())), events


def policy_revision(
    org: PolicySet, workspace: PolicySet, mode: str, dev_override_until: str | None
) -> str:
    """Return the ``policyRevision``: a sha256 hex that changes whenever desired policy does."""
    # Rule order is part of the wire contract, so it is hashed as given; only keys are sorted.
    canonical = json.dumps(
        {
            "org": org.to_dict(),
            "workspace": workspace.to_dict(),
            "mode": mode,
            "dev_override_until": dev_override_until,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
