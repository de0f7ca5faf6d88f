"""Authority-mode merging on the runtime side: the shared vectors, and warnings the fleet counts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fleetplane.client import (
    Client,
    ClientError,
    PolicyRule,
    PolicySet,
    TightenOnlyViolationError,
    apply_policy_mode,
    merge_local_policy,
)
from tests.client.conftest import (
    ENDPOINT,
    by_agent,
    enrollment_token,
    fleet,
    put_policies,
    set_mode,
)
from tests.conftest import ADMIN, VECTORS_DIR, Clock, make_workspace


def _cases() -> list[Any]:
    document = json.loads((VECTORS_DIR / "authority-mode-merge.json").read_text("utf-8"))
    return [pytest.param(case, id=case["name"]) for case in document["cases"]]


CASES = _cases()


def test_every_vector_kind_is_present() -> None:
    assert {param.values[0]["expect"] for param in CASES} == {"effective", "reject"}
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES)
def test_client_merge_reproduces_vector(case: dict[str, Any]) -> None:
    given = case["input"]
    arguments = {
        "mode": given["mode"],
        "workspace_id": given["workspace_id"],
        "remote": given["remote"],
        "local": given.get("local"),
        "timestamp": given["timestamp"],
    }
    if case["expect"] == "reject":
        with pytest.raises(TightenOnlyViolationError) as raised:
            apply_policy_mode(**arguments)
        assert raised.value.message == case["error"]
        assert raised.value.code == "tighten_only_violation"
        assert raised.value.workspace_id == given["workspace_id"]
        merged = merge_local_policy(**arguments, session_id="s-1")
        assert merged.effective.to_dict() == given["remote"]
        assert merged.rejection is not None
        assert merged.events == [
            {
                "schema_version": 1,
                "kind": "workspace_warning",
                "timestamp": given["timestamp"],
                "message": case["error"],
                "code": "tighten_only_violation",
                "rule_id": merged.rejection.rule_id,
                "session_id": "s-1",
            }
        ]
        return
    effective, events = apply_policy_mode(**arguments)
    assert effective.to_dict() == case["effective"]
    assert events == case["events"]
    merged = merge_local_policy(**arguments)
    assert (merged.effective.to_dict(), merged.events, merged.rejection) == (
        case["effective"],
        case["events"],
        None,
    )


def test_merge_takes_policy_sets_and_names_the_rejected_rule() -> None:
    remote = PolicySet("allow", (PolicyRule("shell.exec", "deny", "no shells"),))
    local = PolicySet("allow", (PolicyRule("shell.exec", "allow"),))
    with pytest.raises(TightenOnlyViolationError) as raised:
        apply_policy_mode(mode="tighten-only", workspace_id="w", remote=remote, local=local)
    assert raised.value.rule_id == "shell.exec"
    assert raised.value.details == {"workspace_id": "w", "rule_id": "shell.exec"}
    merged = merge_local_policy(mode="tighten-only", workspace_id="w", remote=remote, local=local)
    assert merged.effective is remote
    # Without a given timestamp the client stamps the event with its own clock, in ISO form.
    assert merged.events[0]["timestamp"].endswith("Z")


def test_bad_local_set_and_unknown_mode_are_client_errors() -> None:
    remote = {"default_decision": "allow", "rules": []}
    with pytest.raises(ClientError) as bad_set:
        apply_policy_mode(
            mode="tighten-only",
            workspace_id="w",
            remote=remote,
            local={"default_decision": "maybe"},
        )
    assert bad_set.value.code == "invalid_policy_set"
    assert bad_set.value.message.startswith("local policy set: default_decision")
    with pytest.raises(ClientError) as bad_mode:
        apply_policy_mode(mode="lenient", workspace_id="w", remote=remote, local=None)
    assert bad_mode.value.code == "invalid_policy_mode"
    assert not isinstance(bad_mode.value, TightenOnlyViolationError)


def test_rejections_and_dev_override_loosening_become_counted_warnings(
    client: TestClient, sync_transport: httpx.BaseTransport, clock: Clock
) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    put_policies(
        client,
        ws.workspace_id,
        {"default_decision": "allow", "rules": [{"id": "shell.exec", "decision": "deny"}]},
    )
    local = {
        "default_decision": "allow",
        "rules": [{"id": "shell.exec", "decision": "allow", "reason": "local build scripts"}],
    }
    token = enrollment_token(client, ws.workspace_id)
    # The client's clock is the test clock, so event timestamps are predictable.
    with Client(ENDPOINT, transport=sync_transport, clock=clock) as runtime:
        runtime.enroll(token, "dev-box")
        beat = runtime.heartbeat("s-1")
        pulled = runtime.pull_policies()
        assert pulled.policy_set == PolicySet("allow", (PolicyRule("shell.exec", "deny"),))
        merged = merge_local_policy(
            mode=beat.policy_mode,
            workspace_id=ws.workspace_id,
            remote=pulled.body,
            local=local,
            timestamp=runtime.timestamp(),
            session_id=runtime.session_id,
        )
        assert merged.effective == pulled.policy_set
        assert [event["kind"] for event in merged.events] == ["workspace_warning"]
        assert merged.events[0]["message"] == (
            "tighten-only mode rejected local policy loosening for rule shell.exec"
            f" in workspace {ws.workspace_id}"
        )
        assert merged.events[0]["timestamp"] == "2026-03-01T12:00:00.000Z"
        assert runtime.send_events(merged.events) == 1
        assert by_agent(fleet(client, ws.workspace_id))["dev-box"]["warnings24h"] == 1

        until = (clock() + timedelta(days=1)).isoformat()
        response = client.patch(
            f"/api/v1/workspaces/{ws.workspace_id}",
            json={"policyMode": "dev-override", "devOverrideUntil": until},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        beat = runtime.heartbeat("s-1")
        assert beat.policy_mode == "dev-override"
        loosened = merge_local_policy(
            mode=beat.policy_mode,
            workspace_id=ws.workspace_id,
            remote=runtime.pull_policies().body,
            local=local,
            timestamp=runtime.timestamp(),
        )
        assert loosened.effective.to_dict() == local
        assert [event["message"] for event in loosened.events] == [
            "dev-override allowed local policy loosening for rule shell.exec"
            f" in workspace {ws.workspace_id}"
        ]
        runtime.send_events(loosened.events)
        assert by_agent(fleet(client, ws.workspace_id))["dev-box"]["warnings24h"] == 2

        set_mode(client, ws.workspace_id, "authoritative")
        beat = runtime.heartbeat("s-1")
        ignored = merge_local_policy(
            mode=beat.policy_mode,
            workspace_id=ws.workspace_id,
            remote=runtime.pull_policies().body,
            local=local,
        )
        assert (ignored.effective, ignored.events) == (pulled.policy_set, [])
