"""The whole runtime life cycle over HTTP, on SQLite and PostgreSQL (SPEC 3, 4.2, 4.3)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fleetplane.domain.config_hash import config_hash, parse_workspace_yaml
from tests.conftest import ADMIN, Clock, auth, make_workspace

CONFIG_V2 = "lanes:\n  - name: 'Framework: Core'\n    wip_limit: 1\nsync: on\n"
CONFIG_V3 = "lanes:\n  - name: 'Framework: Core'\n    wip_limit: 3\nsync: on\n"


def fleet(client: TestClient, workspace_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/workspaces/{workspace_id}/fleet", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def by_agent(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {runtime["agentId"]: runtime for runtime in body["runtimes"]}


def put_yaml(client: TestClient, workspace_id: str, text: str) -> dict[str, Any]:
    response = client.put(
        f"/api/v1/workspaces/{workspace_id}/config",
        content=text.encode(),
        headers={**ADMIN, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 200, response.text
    return response.json()["configRevision"]


def runtime_credential(client: TestClient, key: str, ws: Any, agent_id: str) -> str:
    response = client.post(
        "/api/v1/authenticate",
        json={"workspace_id": ws.workspace_id, "org_id": ws.org_id, "agent_id": agent_id},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert token.startswith("fp_rt_")
    return token


def heartbeat(client: TestClient, token: str, ws: Any, **fields: Any) -> dict[str, Any]:
    body = {"workspace_id": ws.workspace_id, "session_id": fields.pop("session_id", "s"), **fields}
    response = client.post("/api/v1/heartbeat", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def report_applied(client: TestClient, token: str, ws: Any, digest: str) -> None:
    response = client.post(
        "/api/v1/events",
        json={
            "workspace_id": ws.workspace_id,
            "events": [
                {
                    "schema_version": 1,
                    "kind": "workspace_updated",
                    "timestamp": "t",
                    "config_hash": digest,
                }
            ],
        },
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1}


def test_full_life_cycle(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client, name="prod")
    revision = put_yaml(client, ws.workspace_id, CONFIG_V2)
    desired = config_hash(parse_workspace_yaml(CONFIG_V2))
    assert revision == {"number": 2, "hash": desired}

    # Each runtime gets its own credential, then follows the SDK's order: policies, heartbeat,
    # config, then reports what it applied.
    agents = {
        "current": ("3.12.6", desired),
        "limited": ("3.5.1", desired),
        "old": ("3.3.0", desired),
        "unversioned": (None, None),
        "unversioned-aligned": (None, desired),
        "behind": ("3.12.6", config_hash({})),
        "failing": ("3.12.6", None),
    }
    tokens = {}
    for agent_id, (version, applied) in agents.items():
        token = runtime_credential(client, ws.api_key, ws, agent_id)
        tokens[agent_id] = token
        policies = client.post(
            "/api/v1/policies", json={"workspace_id": ws.workspace_id}, headers=auth(token)
        )
        assert policies.status_code == 200
        assert policies.json() == {"default_decision": "allow", "rules": []}
        extra = {"runtime_version": version} if version else {}
        beat = heartbeat(client, token, ws, session_id=f"{agent_id}-1", **extra)
        assert beat["config_hash"] == desired
        assert beat["policy_mode"] == "authoritative"
        assert beat["next_heartbeat_ms"] == 30_000
        pulled = client.post(
            "/api/v1/config", json={"workspace_id": ws.workspace_id}, headers=auth(token)
        ).json()
        assert pulled["config_hash"] == desired
        assert pulled["config_revision"] == 2
        assert pulled["config"] == {
            "lanes": [{"name": "Framework: Core", "wip_limit": 1}],
            "sync": "on",
        }
        assert pulled["control_plane"]["org_id"] == ws.org_id
        if applied:
            report_applied(client, token, ws, applied)

    failed = client.post(
        "/api/v1/events",
        json={
            "events": [
                {
                    "kind": "config_apply_failed",
                    "config_hash": desired,
                    "message": "lane limit invalid",
                }
            ]
        },
        headers=auth(tokens["failing"]),
    )
    assert failed.json() == {"accepted": 1}

    enrollment = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/enrollments", json={"maxUses": 1}, headers=ADMIN
    ).json()
    enrolled = client.post(
        "/api/v1/enroll",
        json={
            "enrollment_token": enrollment["token"],
            "agent_id": "quiet",
            "runtime_version": "3.8.0",
        },
    )
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["workspace_id"] == ws.workspace_id

    runtimes = by_agent(fleet(client, ws.workspace_id))
    expected = {
        "current": ("full", "aligned", None),
        "limited": ("limited", "needs_reconcile", "version_below_full_sync"),
        "old": ("unsupported", "upgrade_required", "version_below_minimum"),
        "unversioned": ("unknown", "needs_reconcile", "config_revision_unreported"),
        "unversioned-aligned": ("unknown", "aligned", None),
        "behind": ("full", "needs_reconcile", "config_revision_differs"),
        "failing": ("full", "needs_reconcile", "apply_failed"),
        "quiet": ("full", "awaiting_sync", "no_heartbeat"),
    }
    actual = {
        agent: (r["compatibility"], r["drift"], r["driftReason"]) for agent, r in runtimes.items()
    }
    assert actual == expected
    assert runtimes["failing"]["applyFailedMessage"] == "lane limit invalid"
    assert runtimes["current"]["observedConfigRevision"] == 2
    assert runtimes["behind"]["observedConfigRevision"] == 1
    assert runtimes["quiet"]["health"] == "never"
    assert runtimes["current"]["health"] == "connected"
    assert fleet(client, ws.workspace_id)["summary"] == {
        "total": 8,
        "active": 7,
        "stale": 0,
        "dormant": 0,
        "never": 1,
        "aligned": 2,
        "needsReconcile": 4,
        "upgradeRequired": 1,
        "awaitingSync": 1,
        "archived": 0,
    }

    # A config edit shows on the next read; a revert restores the earlier hash.
    edited = put_yaml(client, ws.workspace_id, CONFIG_V3)
    assert edited["number"] == 3
    after_edit = by_agent(fleet(client, ws.workspace_id))
    assert after_edit["current"]["drift"] == "needs_reconcile"
    assert after_edit["current"]["driftReason"] == "config_revision_differs"
    # The failure was for the old desired hash, so it no longer decides the drift.
    assert after_edit["failing"]["driftReason"] == "config_revision_unreported"
    reverted = put_yaml(client, ws.workspace_id, CONFIG_V2)
    assert reverted == {"number": 4, "hash": desired}
    after_revert = by_agent(fleet(client, ws.workspace_id))
    assert after_revert["current"]["drift"] == "aligned"
    assert after_revert["current"]["observedConfigRevision"] == 4
    # Storing the same document again is not a new revision.
    assert put_yaml(client, ws.workspace_id, CONFIG_V2)["number"] == 4

    # Reporting the desired hash as applied clears an apply failure.
    report_applied(client, tokens["failing"], ws, desired)
    assert by_agent(fleet(client, ws.workspace_id))["failing"]["drift"] == "aligned"


def test_health_boundaries_follow_the_server_clock(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client)
    token = runtime_credential(client, ws.api_key, ws, "r1")
    # A client-supplied timestamp does not decide health.
    heartbeat(client, token, ws, health={"last_progress_at": "2000-01-01T00:00:00Z"})
    expectations = [(299, "connected"), (1, "stale"), (3300, "stale"), (1, "dormant")]
    age = 0
    for step, health in expectations:
        clock.advance(step)
        age += step
        runtime = fleet(client, ws.workspace_id)["runtimes"][0]
        assert runtime["heartbeatAgeSeconds"] == age
        assert runtime["health"] == health, (age, runtime)
        assert fleet(client, ws.workspace_id, health=health)["summary"]["total"] == 1
    heartbeat(client, token, ws)
    assert fleet(client, ws.workspace_id)["runtimes"][0]["health"] == "connected"


def test_sdk_with_workspace_key_registers_by_session(client: TestClient) -> None:
    """A LumenFlow runtime with only the workspace key: policies, heartbeat, then events."""
    ws = make_workspace(client)
    headers = auth(ws.api_key)
    body = {"workspace_id": ws.workspace_id}
    assert client.post("/api/v1/policies", json=body, headers=headers).status_code == 200
    beat = client.post(
        "/api/v1/heartbeat",
        json={
            **body,
            "session_id": "sess-1",
            "wu_id": "WU-1",
            "health": {"busy": True, "stalled": False},
            "unused_field": 1,
        },
        headers=headers,
    )
    assert beat.status_code == 200
    desired = beat.json()["config_hash"]
    events = client.post(
        "/api/v1/events",
        json={
            **body,
            "events": [
                {
                    "schema_version": 1,
                    "kind": "workspace_updated",
                    "timestamp": "2026-03-01T12:00:00Z",
                    "session_id": "sess-1",
                    "config_hash": desired,
                },
                {"schema_version": 1, "kind": "run_started", "timestamp": "2026-03-01T12:00:00Z"},
            ],
        },
        headers=headers,
    )
    assert events.json() == {"accepted": 2}
    runtime = fleet(client, ws.workspace_id)["runtimes"][0]
    assert runtime["agentId"] == "sess-1"
    assert runtime["lastSessionId"] == "sess-1"
    assert runtime["drift"] == "aligned"
    assert runtime["observedConfigHash"] == desired
