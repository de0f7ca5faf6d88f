"""Tracked deployment versions: revisions behind, rollout progress, rollback, diff, failures."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fleetplane.domain.config_hash import config_hash
from tests.conftest import ADMIN, Clock, auth, make_workspace


def fleet(client: TestClient, workspace_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/workspaces/{workspace_id}/fleet", headers=ADMIN).json()


def test_rollout_progress_rollback_and_diff(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client)
    path = f"/api/v1/workspaces/{ws.workspace_id}"
    v2, v3 = {"lanes": ["a"], "limit": 1}, {"lanes": ["a", "b"], "limit": 2}
    client.put(f"{path}/config", json=v2, headers=ADMIN)
    clock.advance(60)
    client.put(f"{path}/config", json=v3, headers=ADMIN)
    key = auth(ws.api_key)
    for agent, digest in (("on-v2", config_hash(v2)), ("on-v3", config_hash(v3)), ("silent", None)):
        body = {"agent_id": agent, "session_id": agent, "runtime_version": "3.12.6"}
        if digest:
            body["config_hash"] = digest
        assert client.post("/api/v1/heartbeat", json=body, headers=key).status_code == 200
    clock.advance(30)
    body = fleet(client, ws.workspace_id)
    behind = {
        r["agentId"]: (r["observedConfigRevision"], r["revisionsBehind"]) for r in body["runtimes"]
    }
    assert behind == {"on-v2": (2, 1), "on-v3": (3, 0), "silent": (None, None)}
    assert body["rollout"] == {
        "revision": 3,
        "onRevision": 1,
        "expected": 3,
        "startedAt": "2026-03-01T12:01:00Z",
        "runningSeconds": 30,
    }

    diff = client.get(f"{path}/config/diff", params={"from": 2, "to": 3}, headers=ADMIN).json()
    assert diff["diff"].startswith("--- revision 2\n+++ revision 3\n")
    assert '-  "limit": 1' in diff["diff"]
    assert '+  "limit": 2' in diff["diff"]

    rolled = client.post(f"{path}/config/rollback", json={"number": 2}, headers=ADMIN)
    assert rolled.json()["configRevision"] == {"number": 4, "hash": config_hash(v2)}
    after = {
        r["agentId"]: (r["drift"], r["revisionsBehind"])
        for r in fleet(client, ws.workspace_id)["runtimes"]
    }
    assert after["on-v2"] == ("aligned", 0)
    assert after["on-v3"] == ("needs_reconcile", 1)
    audit = client.get(f"{path}/audit", headers=ADMIN).json()["items"]
    assert audit[0]["action"] == "config.rollback"
    missing = client.post(f"{path}/config/rollback", json={"number": 99}, headers=ADMIN)
    assert missing.status_code == 404


def test_apply_failure_reported_in_a_heartbeat(client: TestClient) -> None:
    ws = make_workspace(client)
    client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"a": 1}, headers=ADMIN)
    desired = config_hash({"a": 1})
    key = auth(ws.api_key)
    base = {"agent_id": "r", "session_id": "r", "runtime_version": "3.12.6"}
    client.post("/api/v1/heartbeat", json={**base, "config_hash": config_hash({})}, headers=key)
    failed = client.post(
        "/api/v1/heartbeat",
        json={**base, "config_apply_failed_hash": desired, "config_apply_error": "disk full"},
        headers=key,
    )
    assert failed.status_code == 200
    runtime = fleet(client, ws.workspace_id)["runtimes"][0]
    assert (runtime["driftReason"], runtime["applyFailedMessage"]) == ("apply_failed", "disk full")
    bad = client.post(
        "/api/v1/heartbeat", json={**base, "config_apply_failed_hash": "nope"}, headers=key
    )
    assert bad.status_code == 422
    client.post("/api/v1/heartbeat", json={**base, "config_hash": desired}, headers=key)
    assert fleet(client, ws.workspace_id)["runtimes"][0]["drift"] == "aligned"


def test_reporting_the_failed_hash_as_applied_clears_the_failure_on_the_hot_path(
    client: TestClient,
) -> None:
    ws = make_workspace(client)
    client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"a": 1}, headers=ADMIN)
    desired = config_hash({"a": 1})
    key = auth(ws.api_key)
    base = {"agent_id": "r", "session_id": "r", "runtime_version": "3.12.6"}
    for body in (
        {**base, "config_hash": desired},  # registers the runtime (full route)
        {**base, "config_hash": desired},  # cached from here on
        {**base, "config_apply_failed_hash": desired, "config_apply_error": "boom"},
    ):
        assert client.post("/api/v1/heartbeat", json=body, headers=key).status_code == 200
    assert fleet(client, ws.workspace_id)["runtimes"][0]["driftReason"] == "apply_failed"
    client.post("/api/v1/heartbeat", json={**base, "config_hash": desired}, headers=key)
    assert fleet(client, ws.workspace_id)["runtimes"][0]["drift"] == "aligned"
