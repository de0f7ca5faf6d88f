"""Policy sets: parsing, scope merge, authority-mode merge (shared vectors) and revision."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetplane.domain.errors import Invalid, TightenOnlyViolation
from fleetplane.domain.policy import (
    EMPTY_ALLOW,
    POLICY_MODES,
    PolicyRule,
    PolicySet,
    active_policies,
    apply_policy_mode,
    merge_scopes,
    parse_policy_set,
    policy_revision,
)
from tests.conftest import VECTORS_DIR


def _mode_cases() -> list[Any]:
    document = json.loads((VECTORS_DIR / "authority-mode-merge.json").read_text("utf-8"))
    return [pytest.param(case, id=case["name"]) for case in document["cases"]]


MODE_CASES = _mode_cases()
TIMESTAMP = "2026-01-01T00:00:00.000Z"


def test_vector_file_has_every_kind_of_case() -> None:
    expectations = {param.values[0]["expect"] for param in MODE_CASES}
    modes = {param.values[0]["input"]["mode"] for param in MODE_CASES}
    assert expectations == {"effective", "reject"}
    assert modes == set(POLICY_MODES)


@pytest.mark.parametrize("case", MODE_CASES)
def test_authority_mode_merge_matches_vector(case: dict[str, Any]) -> None:
    given_input = case["input"]
    raw_local = given_input.get("local")

    def run() -> tuple[PolicySet, list[dict[str, Any]]]:
        return apply_policy_mode(
            mode=given_input["mode"],
            workspace_id=given_input["workspace_id"],
            remote=parse_policy_set(given_input["remote"]),
            local=None if raw_local is None else parse_policy_set(raw_local),
            timestamp=given_input["timestamp"],
        )

    if case["expect"] == "reject":
        with pytest.raises(TightenOnlyViolation) as raised:
            run()
        assert raised.value.message == case["error"]
        assert raised.value.code == "tighten_only_violation"
        return
    effective, events = run()
    assert effective.to_dict() == case["effective"]
    assert events == case["events"]


# --- parsing ------------------------------------------------------------------------------


def test_parse_full_set() -> None:
    parsed = parse_policy_set(
        {
            "default_decision": "deny",
            "rules": [
                {"id": "net.fetch", "decision": "allow", "reason": "docs mirror"},
                {"id": "shell.exec", "decision": "deny", "reason": None},
            ],
        }
    )
    assert parsed == PolicySet(
        "deny",
        (PolicyRule("net.fetch", "allow", "docs mirror"), PolicyRule("shell.exec", "deny")),
    )


def test_missing_rules_means_no_rules() -> None:
    assert parse_policy_set({"default_decision": "allow"}) == EMPTY_ALLOW


def test_to_dict_omits_absent_reason_only() -> None:
    policy_set = PolicySet("allow", (PolicyRule("a", "deny"), PolicyRule("b", "allow", "")))
    assert policy_set.to_dict() == {
        "default_decision": "allow",
        "rules": [{"id": "a", "decision": "deny"}, {"id": "b", "decision": "allow", "reason": ""}],
    }


def test_rule_id_of_exactly_200_characters_and_1000_rules_are_accepted() -> None:
    rules = [{"id": f"{index:0200d}", "decision": "deny"} for index in range(1000)]
    parsed = parse_policy_set({"default_decision": "allow", "rules": rules})
    assert len(parsed.rules) == 1000
    assert len(parsed.rules[0].id) == 200


def _rules(*extra: Any) -> dict[str, Any]:
    return {"default_decision": "allow", "rules": [{"id": "ok", "decision": "deny"}, *extra]}


@pytest.mark.parametrize(
    ("document", "path"),
    [
        pytest.param(["default_decision"], "", id="not-a-mapping"),
        pytest.param(None, "", id="null"),
        pytest.param({"rules": []}, "default_decision", id="default-missing"),
        pytest.param({"default_decision": "Allow"}, "default_decision", id="default-bad-case"),
        pytest.param({"default_decision": True}, "default_decision", id="default-not-string"),
        pytest.param(
            {"default_decision": "allow", "mode": "x"}, "mode", id="unknown-top-level-field"
        ),
        pytest.param({"default_decision": "allow", "rules": None}, "rules", id="rules-null"),
        pytest.param({"default_decision": "allow", "rules": {}}, "rules", id="rules-mapping"),
        pytest.param(
            {
                "default_decision": "allow",
                "rules": [{"id": str(i), "decision": "deny"} for i in range(1001)],
            },
            "rules",
            id="too-many-rules",
        ),
        pytest.param(_rules("shell.exec"), "rules[1]", id="rule-not-a-mapping"),
        pytest.param(_rules({"decision": "deny"}), "rules[1].id", id="id-missing"),
        pytest.param(_rules({"id": "", "decision": "deny"}), "rules[1].id", id="id-empty"),
        pytest.param(_rules({"id": 7, "decision": "deny"}), "rules[1].id", id="id-not-string"),
        pytest.param(
            _rules({"id": "x" * 201, "decision": "deny"}), "rules[1].id", id="id-too-long"
        ),
        pytest.param(_rules({"id": "a"}), "rules[1].decision", id="decision-missing"),
        pytest.param(
            _rules({"id": "a", "decision": "block"}), "rules[1].decision", id="decision-unknown"
        ),
        pytest.param(
            _rules({"id": "a", "decision": "deny", "reason": 3}),
            "rules[1].reason",
            id="reason-not-string",
        ),
        pytest.param(
            _rules({"id": "a", "decision": "deny", "priority": 1, "effect": "x"}),
            "rules[1].effect",
            id="unknown-rule-field",
        ),
        pytest.param(
            _rules({"id": "b", "decision": "deny"}, {"id": "ok", "decision": "allow"}),
            "rules[2].id",
            id="duplicate-id",
        ),
    ],
)
def test_parse_refuses(document: object, path: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_policy_set(document)
    assert raised.value.code == "invalid_policy_set"
    assert raised.value.details == {"path": path}
    if path:
        assert raised.value.message.startswith(f"{path}: ")


def test_duplicate_id_message_names_both_places() -> None:
    with pytest.raises(
        Invalid, match=r"rules\[2\]\.id: rule id 'ok' is already named by rules\[0\]"
    ):
        parse_policy_set(_rules({"id": "b", "decision": "deny"}, {"id": "ok", "decision": "allow"}))


# --- scope merge --------------------------------------------------------------------------


def test_scope_merge_deny_wins_and_keeps_the_winning_reason() -> None:
    org = PolicySet(
        "allow",
        (
            PolicyRule("shell.exec", "deny", "org: no shells"),
            PolicyRule("net.fetch", "allow", "org: fetch ok"),
            PolicyRule("fs.read", "allow", "org: read ok"),
            PolicyRule("org.only", "allow"),
        ),
    )
    workspace = PolicySet(
        "allow",
        (
            PolicyRule("ws.only", "deny", "ws: nope"),
            PolicyRule("fs.read", "allow", "ws: read ok"),
            PolicyRule("net.fetch", "deny", "ws: no egress"),
            PolicyRule("shell.exec", "allow", "ws: shells please"),
        ),
    )
    assert merge_scopes(org, workspace) == PolicySet(
        "allow",
        (
            PolicyRule("shell.exec", "deny", "org: no shells"),
            PolicyRule("net.fetch", "deny", "ws: no egress"),
            PolicyRule("fs.read", "allow", "ws: read ok"),
            PolicyRule("org.only", "allow"),
            PolicyRule("ws.only", "deny", "ws: nope"),
        ),
    )


def test_scope_merge_workspace_reason_when_alike_even_if_absent() -> None:
    org = PolicySet("allow", (PolicyRule("a", "deny", "org reason"),))
    workspace = PolicySet("allow", (PolicyRule("a", "deny"),))
    assert merge_scopes(org, workspace).rules == (PolicyRule("a", "deny"),)


@pytest.mark.parametrize(
    ("org_default", "workspace_default", "effective_default"),
    [("allow", "allow", "allow"), ("allow", "deny", "deny"), ("deny", "allow", "deny")],
)
def test_scope_merge_default(
    org_default: str, workspace_default: str, effective_default: str
) -> None:
    merged = merge_scopes(PolicySet(org_default, ()), PolicySet(workspace_default, ()))
    assert merged.default_decision == effective_default


def test_active_policies_lists_both_scopes_org_first() -> None:
    org = PolicySet("deny", (PolicyRule("a", "deny", "org says"),))
    workspace = PolicySet("allow", (PolicyRule("b", "allow"), PolicyRule("a", "allow")))
    assert active_policies(org, workspace) == [
        {"id": "a", "decision": "deny", "reason": "org says", "scope": "org"},
        {"id": "b", "decision": "allow", "reason": None, "scope": "workspace"},
        {"id": "a", "decision": "allow", "reason": None, "scope": "workspace"},
    ]


# --- authority modes, beyond the vectors ---------------------------------------------------


def test_unknown_mode_is_invalid() -> None:
    with pytest.raises(Invalid) as raised:
        apply_policy_mode(
            mode="permissive", workspace_id="w", remote=EMPTY_ALLOW, local=None, timestamp=TIMESTAMP
        )
    assert raised.value.code == "invalid_policy_mode"
    assert not isinstance(raised.value, TightenOnlyViolation)


def test_dev_override_without_local_uses_remote() -> None:
    remote = PolicySet("deny", (PolicyRule("a", "allow"),))
    assert apply_policy_mode(
        mode="dev-override", workspace_id="w", remote=remote, local=None, timestamp=TIMESTAMP
    ) == (remote, [])


def test_local_only_allow_rule_loosens_a_remote_deny_default() -> None:
    remote = PolicySet("deny", (PolicyRule("a", "allow"),))
    local = PolicySet("deny", (PolicyRule("new.tool", "allow"),))
    with pytest.raises(
        TightenOnlyViolation,
        match=r"^tighten-only mode rejected local policy loosening for rule new\.tool"
        r" in workspace w1$",
    ):
        apply_policy_mode(
            mode="tighten-only", workspace_id="w1", remote=remote, local=local, timestamp=TIMESTAMP
        )
    effective, events = apply_policy_mode(
        mode="dev-override", workspace_id="w1", remote=remote, local=local, timestamp=TIMESTAMP
    )
    assert effective == PolicySet(
        "deny", (PolicyRule("a", "allow"), PolicyRule("new.tool", "allow"))
    )
    assert [event["message"] for event in events] == [
        "dev-override allowed local policy loosening for rule new.tool in workspace w1"
    ]


def test_tighten_only_checks_default_before_rules() -> None:
    remote = PolicySet("deny", (PolicyRule("a", "deny"),))
    local = PolicySet("allow", (PolicyRule("a", "allow"),))
    with pytest.raises(TightenOnlyViolation, match="for default_decision "):
        apply_policy_mode(
            mode="tighten-only", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
        )


def test_dev_override_warns_once_per_loosening_in_order() -> None:
    remote = PolicySet("deny", (PolicyRule("a", "deny"), PolicyRule("b", "deny")))
    local = PolicySet("allow", (PolicyRule("b", "allow", "need b"), PolicyRule("a", "allow")))
    effective, events = apply_policy_mode(
        mode="dev-override", workspace_id="w", remote=remote, local=local, timestamp="T"
    )
    assert effective == PolicySet(
        "allow", (PolicyRule("a", "allow"), PolicyRule("b", "allow", "need b"))
    )
    assert events == [
        {
            "schema_version": 1,
            "kind": "workspace_warning",
            "timestamp": "T",
            "message": f"dev-override allowed local policy loosening for {target} in workspace w",
        }
        for target in ("default_decision", "rule b", "rule a")
    ]


def test_local_rule_replaces_remote_reason_whole() -> None:
    remote = PolicySet("allow", (PolicyRule("a", "deny", "remote reason"),))
    local = PolicySet("allow", (PolicyRule("a", "deny"),))
    effective, _ = apply_policy_mode(
        mode="tighten-only", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
    )
    assert effective.rules == (PolicyRule("a", "deny"),)


# --- revision -----------------------------------------------------------------------------


def test_policy_revision_is_a_stable_sha256() -> None:
    org = PolicySet("allow", (PolicyRule("a", "deny", "é"),))
    revision = policy_revision(org, EMPTY_ALLOW, "tighten-only", None)
    assert revision == policy_revision(org, EMPTY_ALLOW, "tighten-only", None)
    assert len(revision) == 64
    assert int(revision, 16) >= 0
    # Pinned so a change of canonical form (which would make every runtime re-pull) is noticed.
    assert policy_revision(EMPTY_ALLOW, EMPTY_ALLOW, "authoritative", None) == (
        hashlib.sha256(
            b'{"dev_override_until":null,"mode":"authoritative",'
            b'"org":{"default_decision":"allow","rules":[]},'
            b'"workspace":{"default_decision":"allow","rules":[]}}'
        ).hexdigest()
    )


def test_policy_revision_changes_with_every_input() -> None:
    org = PolicySet("allow", (PolicyRule("a", "deny"), PolicyRule("b", "deny")))
    base = policy_revision(org, EMPTY_ALLOW, "dev-override", "2026-01-02T00:00:00Z")
    variants = [
        policy_revision(EMPTY_ALLOW, org, "dev-override", "2026-01-02T00:00:00Z"),
        policy_revision(
            PolicySet("allow", org.rules[::-1]), EMPTY_ALLOW, "dev-override", "2026-01-02T00:00:00Z"
        ),
        policy_revision(org, EMPTY_ALLOW, "tighten-only", "2026-01-02T00:00:00Z"),
        policy_revision(org, EMPTY_ALLOW, "dev-override", "2026-01-03T00:00:00Z"),
        policy_revision(org, EMPTY_ALLOW, "dev-override", None),
    ]
    assert len({base, *variants}) == 1 + len(variants)


# --- properties ---------------------------------------------------------------------------

decisions = st.sampled_from(["allow", "deny"])
# A small id alphabet makes the scopes collide on ids often.
rule_ids = st.sampled_from(["a", "b", "c", "d", "e", "shell.exec", "net.fetch"])
reasons = st.none() | st.text(alphabet="ré ", max_size=3)


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    ids = draw(st.lists(rule_ids, unique=True, max_size=7))
    rules = tuple(PolicyRule(rule_id, draw(decisions), draw(reasons)) for rule_id in ids)
    return PolicySet(draw(decisions), rules)


def _decision_for(policy_set: PolicySet, rule_id: str) -> str:
    for rule in policy_set.rules:
        if rule.id == rule_id:
            return rule.decision
    return policy_set.default_decision


@given(policy_sets(), policy_sets())
def test_scope_merge_never_loosens(org: PolicySet, workspace: PolicySet) -> None:
    merged = merge_scopes(org, workspace)
    merged_ids = [rule.id for rule in merged.rules]
    scope_ids = [rule.id for rule in org.rules] + [rule.id for rule in workspace.rules]
    assert sorted(merged_ids) == sorted(set(scope_ids))
    org_ids = [rule.id for rule in org.rules]
    workspace_only = [rule.id for rule in workspace.rules if rule.id not in org_ids]
    assert merged_ids == org_ids + workspace_only
    # A deny in either scope (an org deny in particular) survives the merge.
    for rule in (*org.rules, *workspace.rules):
        if rule.decision == "deny":
            assert _decision_for(merged, rule.id) == "deny"
    assert (merged.default_decision == "deny") == (
        "deny" in (org.default_decision, workspace.default_decision)
    )


@given(policy_sets(), st.none() | policy_sets())
def test_authoritative_ignores_local(remote: PolicySet, local: PolicySet | None) -> None:
    assert apply_policy_mode(
        mode="authoritative", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
    ) == (remote, [])


def _is_looser(before: str, after: str) -> bool:
    return before == "deny" and after == "allow"


@given(policy_sets(), policy_sets())
def test_tighten_only_is_never_looser_than_remote(remote: PolicySet, local: PolicySet) -> None:
    try:
        effective, events = apply_policy_mode(
            mode="tighten-only", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
        )
    except TightenOnlyViolation:
        return
    assert events == []
    assert not _is_looser(remote.default_decision, effective.default_decision)
    for rule_id in {rule.id for rule in (*remote.rules, *local.rules)}:
        assert not _is_looser(_decision_for(remote, rule_id), _decision_for(effective, rule_id))


@given(policy_sets(), policy_sets())
def test_dev_override_agrees_with_tighten_only_unless_it_warns(
    remote: PolicySet, local: PolicySet
) -> None:
    effective, events = apply_policy_mode(
        mode="dev-override", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
    )
    if events:
        with pytest.raises(TightenOnlyViolation):
            apply_policy_mode(
                mode="tighten-only",
                workspace_id="w",
                remote=remote,
                local=local,
                timestamp=TIMESTAMP,
            )
    else:
        assert apply_policy_mode(
            mode="tighten-only", workspace_id="w", remote=remote, local=local, timestamp=TIMESTAMP
        ) == (effective, [])


@given(policy_sets())
def test_parse_round_trips_to_dict(policy_set: PolicySet) -> None:
    assert parse_policy_set(policy_set.to_dict()) == policy_set
    assert parse_policy_set(json.loads(json.dumps(policy_set.to_dict()))) == policy_set
