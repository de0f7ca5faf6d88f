"""Workspace authority mode, dev-override expiry and the audit trail of desired-state changes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN, Clock, auth, make_workspace


def test_dev_override_needs_a_near_expiry_and_lapses_back(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    path = f"/api/v1/workspaces/{ws.workspace_id}"
    for until in (None, "2026-03-09T12:00:01Z", "2026-03-01T11:59:59Z", "2026-03-05T12:00:00"):
        body = {"policyMode": "dev-override", **({"devOverrideUntil": until} if until else {})}
        assert client.patch(path, json=body, headers=ADMIN).status_code == 422, until
    ok = client.patch(
        path,
        json={"policyMode": "dev-override", "devOverrideUntil": "2026-03-01T13:00:00Z"},
        headers=ADMIN,
    )
    assert ok.status_code == 200
    assert ok.json()["policyMode"] == "dev-override"
    assert ok.json()["devOverrideUntil"] == "2026-03-01T13:00:00Z"
    key = auth(ws.api_key)
    assert (
        client.post("/api/v1/heartbeat", json={"session_id": "s"}, headers=key).json()[
            "policy_mode"
        ]
        == "dev-override"
    )

    clock.advance(3600)
    assert (
        client.post("/api/v1/config", json={}, headers=key).json()["control_plane"]["policy_mode"]
        == "tighten-only"
    )
    assert client.get(path, headers=ADMIN).json()["policyMode"] == "tighten-only"
    fleet_config = client.get(f"{path}/fleet/config", headers=ADMIN).json()
    assert fleet_config["policyMode"] == "tighten-only"
    fleet = client.get(f"{path}/fleet", headers=ADMIN).json()
    assert fleet["desiredState"]["policyMode"] == "tighten-only"
    assert fleet["desiredState"]["devOverrideUntil"] is None
    actions = [
        item["action"] for item in client.get(f"{path}/audit", headers=ADMIN).json()["items"]
    ]
    assert actions.count("workspace.dev_override_lapsed") == 1
    assert actions[0] == "workspace.dev_override_lapsed"


def test_enrolling_after_a_dev_override_expired_starts_from_the_previous_mode(
    client: TestClient, clock: Clock
) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    path = f"/api/v1/workspaces/{ws.workspace_id}"
    enrollment = client.post(f"{path}/enrollments", json={}, headers=ADMIN).json()
    override = {"policyMode": "dev-override", "devOverrideUntil": "2026-03-01T13:00:00Z"}
    assert client.patch(path, json=override, headers=ADMIN).status_code == 200
    clock.advance(3600)
    # The enrollment is the first thing to read the workspace after the expiry.
    enrolled = client.post(
        "/api/v1/enroll",
        json={
            "enrollment_token": enrollment["token"],
            "agent_id": "late",
            "runtime_version": "3.8.0",
        },
    )
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["control_plane"]["policy_mode"] == "tighten-only"
    actions = [
        item["action"] for item in client.get(f"{path}/audit", headers=ADMIN).json()["items"]
    ]
    assert actions.count("workspace.dev_override_lapsed") == 1
    assert client.get(path, headers=ADMIN).json()["policyMode"] == "tighten-only"


def test_config_revisions_and_audit_are_paged_newest_first(client: TestClient) -> None:
    ws = make_workspace(client)
    path = f"/api/v1/workspaces/{ws.workspace_id}"
    for value in range(4):
        client.put(f"{path}/config", json={"value": value}, headers=ADMIN)
    first = client.get(f"{path}/config/revisions", params={"limit": 3}, headers=ADMIN).json()
    assert [item["number"] for item in first["items"]] == [5, 4, 3]
    assert first["items"][0]["author"] == "admin"
    rest = client.get(
        f"{path}/config/revisions", params={"cursor": first["nextCursor"]}, headers=ADMIN
    ).json()
    assert [item["number"] for item in rest["items"]] == [2, 1]
    assert rest["nextCursor"] is None
    audit = client.get(f"{path}/audit", headers=ADMIN).json()["items"]
    assert [item["action"] for item in audit] == ["config.update"] * 4 + [
        "api_key.regenerate",
        "workspace.create",
    ]
    assert audit[0]["beforeHash"] == first["items"][1]["hash"]
    assert audit[0]["afterHash"] == first["items"][0]["hash"]


def test_policy_preview_applies_the_workspace_mode(client: TestClient) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    client.put(
        f"/api/v1/workspaces/{ws.workspace_id}/policies",
        json={"default_decision": "allow", "rules": [{"id": "shell", "decision": "deny"}]},
        headers=ADMIN,
    )
    loosen = {
        "local": {"default_decision": "allow", "rules": [{"id": "shell", "decision": "allow"}]}
    }
    refused = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/policies/preview", json=loosen, headers=ADMIN
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "tighten_only_violation"
    tighten = {"local": {"default_decision": "allow", "rules": [{"id": "net", "decision": "deny"}]}}
    preview = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/policies/preview", json=tighten, headers=ADMIN
    ).json()
    assert preview == {
        "effective": {
            "default_decision": "allow",
            "rules": [{"id": "shell", "decision": "deny"}, {"id": "net", "decision": "deny"}],
        },
        "events": [],
    }


def test_bootstrap_token_and_unknown_operator_token(client: TestClient) -> None:
    assert client.post("/api/v1/orgs", json={"name": "x"}).status_code == 401
    assert (
        client.post("/api/v1/orgs", json={"name": "x"}, headers=auth("fp_op_wrong")).status_code
        == 401
    )
    assert client.post("/api/v1/orgs", json={"name": "x"}, headers=ADMIN).status_code == 201
