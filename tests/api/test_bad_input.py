"""Refused requests get SPEC 4.1's status and error body, and change nothing in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from fleetplane.store.db import Database
from tests.conftest import ADMIN, WorkspaceFixture, auth, make_workspace, snapshot

Call = Callable[[TestClient, WorkspaceFixture, WorkspaceFixture, str], Response]


def _heartbeat(body: dict[str, Any], holder: str = "key") -> Call:
    def call(
        client: TestClient, ws: WorkspaceFixture, other: WorkspaceFixture, rt: str
    ) -> Response:
        token = {
            "key": ws.api_key,
            "other": other.api_key,
            "runtime": rt,
            "wrong": "fp_ws_not-a-real-key",
        }[holder]
        payload = {"workspace_id": ws.workspace_id, "session_id": "s-1", **body}
        return client.post("/api/v1/heartbeat", json=payload, headers=auth(token))

    return call


CASES: dict[str, tuple[Call, int, str]] = {
    "non-semver version": (_heartbeat({"runtime_version": "3.x"}), 422, "invalid_version"),
    "malformed config hash": (_heartbeat({"config_hash": "ABC"}), 422, "invalid_config_hash"),
    "uppercase config hash": (_heartbeat({"config_hash": "A" * 64}), 422, "invalid_config_hash"),
    "wrong token": (_heartbeat({}, holder="wrong"), 401, "unauthenticated"),
    "no token": (
        lambda c, ws, o, rt: c.post("/api/v1/heartbeat", json={"session_id": "s"}),
        401,
        "unauthenticated",
    ),
    "key of another workspace": (_heartbeat({}, holder="other"), 403, "workspace_mismatch"),
    "runtime credential, other workspace_id": (
        lambda c, ws, o, rt: c.post(
            "/api/v1/heartbeat",
            json={"workspace_id": o.workspace_id, "session_id": "s"},
            headers=auth(rt),
        ),
        403,
        "workspace_mismatch",
    ),
    "body over the limit": (
        lambda c, ws, o, rt: c.post(
            "/api/v1/events",
            json={"events": [{"kind": "x", "blob": "a" * 70_000}]},
            headers=auth(ws.api_key),
        ),
        413,
        "payload_too_large",
    ),
    "unknown workspace (fleet)": (
        lambda c, ws, o, rt: c.get("/api/v1/workspaces/nope/fleet", headers=ADMIN),
        404,
        "not_found",
    ),
    "unknown workspace (config)": (
        lambda c, ws, o, rt: c.put("/api/v1/workspaces/nope/config", json={"a": 1}, headers=ADMIN),
        404,
        "not_found",
    ),
    "malformed JSON": (
        lambda c, ws, o, rt: c.post(
            "/api/v1/heartbeat",
            content=b"{nope",
            headers={**auth(ws.api_key), "Content-Type": "application/json"},
        ),
        400,
        "malformed_json",
    ),
    "event with a bad hash": (
        lambda c, ws, o, rt: c.post(
            "/api/v1/events",
            json={"events": [{"kind": "run"}, {"kind": "workspace_updated", "config_hash": "x"}]},
            headers=auth(rt),
        ),
        422,
        "invalid_config_hash",
    ),
    "config that is not a mapping": (
        lambda c, ws, o, rt: c.put(
            f"/api/v1/workspaces/{ws.workspace_id}/config", json=[1, 2], headers=ADMIN
        ),
        422,
        "config_not_a_mapping",
    ),
    "duplicate YAML keys": (
        lambda c, ws, o, rt: c.put(
            f"/api/v1/workspaces/{ws.workspace_id}/config",
            content=b"a: 1\na: 2\n",
            headers={**ADMIN, "Content-Type": "application/yaml"},
        ),
        422,
        "invalid_document",
    ),
    "policy set naming a rule twice": (
        lambda c, ws, o, rt: c.put(
            f"/api/v1/workspaces/{ws.workspace_id}/policies",
            json={
                "default_decision": "deny",
                "rules": [{"id": "a", "decision": "deny"}, {"id": "a", "decision": "allow"}],
            },
            headers=ADMIN,
        ),
        422,
        "invalid_policy_set",
    ),
    "unknown policy mode": (
        lambda c, ws, o, rt: c.patch(
            f"/api/v1/workspaces/{ws.workspace_id}", json={"policyMode": "lax"}, headers=ADMIN
        ),
        422,
        "invalid_policy_mode",
    ),
    "dev-override without expiry": (
        lambda c, ws, o, rt: c.patch(
            f"/api/v1/workspaces/{ws.workspace_id}",
            json={"policyMode": "dev-override"},
            headers=ADMIN,
        ),
        422,
        "dev_override_expiry_required",
    ),
    "bad fleet filter": (
        lambda c, ws, o, rt: c.get(
            f"/api/v1/workspaces/{ws.workspace_id}/fleet?health=sleepy", headers=ADMIN
        ),
        422,
        "invalid_health_filter",
    ),
    "bad cursor": (
        lambda c, ws, o, rt: c.get(
            f"/api/v1/workspaces/{ws.workspace_id}/fleet?cursor=%%%", headers=ADMIN
        ),
        422,
        "invalid_cursor",
    ),
    "limit over 1000": (
        lambda c, ws, o, rt: c.get(
            f"/api/v1/workspaces/{ws.workspace_id}/fleet?limit=1001", headers=ADMIN
        ),
        422,
        "invalid_limit",
    ),
    "used-up enrollment token": (
        lambda c, ws, o, rt: c.post(
            "/api/v1/enroll", json={"enrollment_token": "fp_enr_unknown", "agent_id": "x"}
        ),
        401,
        "unauthenticated",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_request_changes_nothing(case: str, client: TestClient, database: Database) -> None:
    ws = make_workspace(client, name="mine")
    other = make_workspace(client, name="other")
    runtime = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "r1"}, headers=ADMIN
    ).json()["credential"]
    call, status, code = CASES[case]
    before = snapshot(database)
    response = call(client, ws, other, runtime)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert snapshot(database) == before


def test_bad_yaml_reports_line_and_column(client: TestClient) -> None:
    ws = make_workspace(client)
    response = client.put(
        f"/api/v1/workspaces/{ws.workspace_id}/config",
        content=b"lanes:\n  - name: ok\n  wip: [1, 2\n",
        headers={**ADMIN, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["line"] >= 3
    assert details["column"] >= 1


def test_revoked_runtime_and_regenerated_key_fail_at_once(client: TestClient) -> None:
    ws = make_workspace(client)
    issued = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "r1"}, headers=ADMIN
    ).json()
    beat = {"workspace_id": ws.workspace_id, "session_id": "s"}
    assert client.post(
        "/api/v1/heartbeat", json=beat, headers=auth(issued["credential"])
    ).is_success
    gone = client.delete(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes/{issued['runtimeId']}", headers=ADMIN
    )
    assert gone.status_code == 204
    again = client.post("/api/v1/heartbeat", json=beat, headers=auth(issued["credential"]))
    assert again.status_code == 401
    new_key = client.post(f"/api/v1/workspaces/{ws.workspace_id}/api-key", headers=ADMIN).json()
    assert client.post("/api/v1/heartbeat", json=beat, headers=auth(ws.api_key)).status_code == 401
    assert (
        client.post("/api/v1/heartbeat", json=beat, headers=auth(new_key["apiKey"])).status_code
        == 200
    )
