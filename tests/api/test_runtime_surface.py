"""Runtime surface details: enrollment, identity, sessions, events, pulls with ETags."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fleetplane.store.db import Database
from fleetplane.store.models import RuntimeEvent, RuntimeSession, TelemetryRecord
from tests.conftest import ADMIN, Clock, auth, make_workspace


def enroll(client: TestClient, token: str, agent_id: str, **extra: object) -> dict:
    response = client.post(
        "/api/v1/enroll", json={"enrollment_token": token, "agent_id": agent_id, **extra}
    )
    return {"status": response.status_code, **response.json()}


def test_enrollment_expiry_max_uses_and_reenrollment(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client)
    created = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/enrollments",
        json={"expiresInSeconds": 600, "maxUses": 2},
        headers=ADMIN,
    )
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("fp_enr_")
    assert created.json()["expiresAt"] == "2026-03-01T12:10:00Z"

    first = enroll(
        client, token, "laptop-1", runtime_version="3.12.6", host_id="h1", labels={"team": "core"}
    )
    assert first["status"] == 200
    assert first["credential"].startswith("fp_rt_")
    assert first["control_plane"]["project_id"] == ws.workspace_id
    assert first["control_plane"]["auth"] == {"token_env": "LUMENFLOW_CLOUD_TOKEN"}
    # Enrolling the same agent again keeps the runtime and replaces its credential.
    second = enroll(client, token, "laptop-1")
    assert second["runtime_id"] == first["runtime_id"]
    beat = {"workspace_id": ws.workspace_id, "session_id": "s"}
    assert (
        client.post("/api/v1/heartbeat", json=beat, headers=auth(first["credential"])).status_code
        == 401
    )
    assert (
        client.post("/api/v1/heartbeat", json=beat, headers=auth(second["credential"])).status_code
        == 200
    )
    # Used up after two uses.
    assert enroll(client, token, "laptop-2")["status"] == 401

    fresh = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/enrollments",
        json={"expiresInSeconds": 60},
        headers=ADMIN,
    ).json()["token"]
    clock.advance(60)
    assert enroll(client, fresh, "laptop-3")["status"] == 401

    runtimes = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()
    assert [
        (r["agentId"], r["hostId"], r["labels"], r["version"]) for r in runtimes["runtimes"]
    ] == [("laptop-1", "h1", {"team": "core"}, "3.12.6")]


def test_enrollment_token_refuses_bad_parameters(client: TestClient) -> None:
    ws = make_workspace(client)
    for body in (
        {"expiresInSeconds": 0},
        {"maxUses": 0},
        {"expiresInSeconds": 10**9},
        {"expiresInSeconds": 464783514922438},  # beyond what a timedelta holds: still a 422
    ):
        response = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/enrollments", json=body, headers=ADMIN
        )
        assert response.status_code == 422, body


def test_preregistered_runtime_is_awaiting_sync_until_it_heartbeats(client: TestClient) -> None:
    ws = make_workspace(client)
    issued = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes",
        json={"agentId": "ci-7", "labels": {"pool": "ci"}},
        headers=ADMIN,
    ).json()
    assert issued["connectCommand"] == (
        f"npx lumenflow cloud connect --endpoint https://fleet.test --org-id {ws.org_id} "
        f"--project-id {ws.workspace_id} --token-env LUMENFLOW_CLOUD_TOKEN"
    )
    runtime = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()
    assert runtime["runtimes"][0]["drift"] == "awaiting_sync"
    duplicate = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "ci-7"}, headers=ADMIN
    )
    assert duplicate.status_code == 409
    # A runtime credential ignores a body agent_id.
    client.post(
        "/api/v1/heartbeat",
        json={"agent_id": "someone-else", "session_id": "s"},
        headers=auth(issued["credential"]),
    )
    body = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()
    assert [r["agentId"] for r in body["runtimes"]] == ["ci-7"]
    assert body["runtimes"][0]["health"] == "connected"


def test_sessions_events_telemetry_and_evidence(client: TestClient, database: Database) -> None:
    ws = make_workspace(client)
    key = auth(ws.api_key)
    registered = client.post(
        "/api/v1/sessions/register",
        json={
            "workspace_id": ws.workspace_id,
            "session_id": "S1",
            "agent_id": "agent-a",
            "agent_version": "3.5.1",
            "host_id": "host-a",
            "agent_type": "claude",
            "capabilities": ["x"],
            "metadata": {"k": "v"},
        },
        headers=key,
    )
    assert registered.json() == {"ok": True}
    assert client.post(
        "/api/v1/sessions", json={"session_id": "S2", "agent_id": "agent-a"}, headers=key
    ).json() == {"ok": True}
    events = client.post(
        "/api/v1/events",
        json={
            "events": [
                {"kind": "workspace_warning", "session_id": "S1", "message": "loosened"},
                {"kind": "workspace_warning", "message": "nobody"},
                {"kind": "task_done"},
            ]
        },
        headers=key,
    )
    assert events.json() == {"accepted": 3}
    telemetry = client.post(
        "/api/v1/telemetry",
        json={"records": [{"metric": "tokens", "value": 12.5, "timestamp": "t", "tags": {"a": 1}}]},
        headers=key,
    )
    assert telemetry.json() == {"accepted": 1}
    bad_telemetry = client.post(
        "/api/v1/telemetry", json={"records": [{"metric": "tokens", "value": "many"}]}, headers=key
    )
    assert bad_telemetry.status_code == 422
    assert client.post(
        "/api/v1/evidence", json={"evidence_refs": ["sha256:ab", {"uri": "s3://x"}]}, headers=key
    ).json() == {"accepted": 2}
    assert client.post(
        "/api/v1/sessions/deregister", json={"session_id": "S1", "reason": "done"}, headers=key
    ).json() == {"ok": True}
    assert (
        client.post(
            "/api/v1/sessions/deregister", json={"session_id": "nope"}, headers=key
        ).status_code
        == 404
    )

    runtime = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()[
        "runtimes"
    ][0]
    assert (runtime["agentId"], runtime["hostId"], runtime["version"]) == (
        "agent-a",
        "host-a",
        "3.5.1",
    )
    assert runtime["warnings24h"] == 1
    assert runtime["health"] == "never"  # only /heartbeat counts for health
    with database.read() as session:
        unattributed = session.scalar(
            select(func.count()).select_from(RuntimeEvent).where(RuntimeEvent.runtime_id.is_(None))
        )
        ended = session.scalar(
            select(RuntimeSession.end_reason).where(RuntimeSession.session_id == "S1")
        )
        stored_telemetry = session.scalar(select(func.count()).select_from(TelemetryRecord))
    assert unattributed == 2
    assert ended == "done"
    assert stored_telemetry == 1


def test_pulls_carry_etags_and_get_forms_answer_304(client: TestClient) -> None:
    ws = make_workspace(client)
    key = auth(ws.api_key)
    for path in (
        "/api/v1/config",
        "/api/v1/policies",
        f"/api/v1/workspaces/{ws.workspace_id}/fleet/config",
    ):
        params = {"workspace_id": ws.workspace_id} if "fleet" not in path else {}
        first = client.get(path, params=params, headers=key)
        assert first.status_code == 200, (path, first.text)
        etag = first.headers["etag"]
        again = client.get(path, params=params, headers={**key, "If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["etag"] == etag
        if "fleet" not in path:
            posted = client.post(
                path, json={"workspace_id": ws.workspace_id}, headers={**key, "If-None-Match": etag}
            )
            assert posted.status_code == 200
            assert posted.headers["etag"] == etag
            assert posted.json() == first.json()
    old = client.get("/api/v1/config", params={"workspace_id": ws.workspace_id}, headers=key)
    client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"a": 1}, headers=ADMIN)
    changed = client.get(
        "/api/v1/config",
        params={"workspace_id": ws.workspace_id},
        headers={**key, "If-None-Match": old.headers["etag"]},
    )
    assert changed.status_code == 200
    assert changed.json()["config"] == {"a": 1}
    assert changed.json()["config_revision"] == 2


def test_policy_scopes_merge_deny_wins(client: TestClient) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    org_policy = {
        "default_decision": "allow",
        "rules": [
            {"id": "net.fetch", "decision": "deny", "reason": "org egress"},
            {"id": "fs.read", "decision": "allow"},
        ],
    }
    ws_policy = {
        "default_decision": "deny",
        "rules": [
            {"id": "net.fetch", "decision": "allow", "reason": "ws wants it"},
            {"id": "fs.read", "decision": "deny", "reason": "ws tighten"},
            {"id": "shell.exec", "decision": "deny"},
        ],
    }
    assert (
        client.put(f"/api/v1/orgs/{ws.org_id}/policies", json=org_policy, headers=ADMIN).status_code
        == 200
    )
    assert (
        client.put(
            f"/api/v1/workspaces/{ws.workspace_id}/policies", json=ws_policy, headers=ADMIN
        ).status_code
        == 200
    )
    effective = client.post("/api/v1/policies", json={}, headers=auth(ws.api_key)).json()
    assert effective["default_decision"] == "deny"
    assert {r["id"]: (r["decision"], r.get("reason")) for r in effective["rules"]} == {
        "net.fetch": ("deny", "org egress"),
        "fs.read": ("deny", "ws tighten"),
        "shell.exec": ("deny", None),
    }
    described = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/fleet/config", headers=ADMIN
    ).json()
    assert described["policyMode"] == "tighten-only"
    assert described["defaultDecision"] == "deny"
    assert described["distribution_mode"] == "always_pull"
    assert described["compatibility"] == {"minimumVersion": "3.4.0", "fullSyncVersion": "3.6.0"}
    assert [(p["id"], p["scope"]) for p in described["activePolicies"]] == [
        ("net.fetch", "org"),
        ("fs.read", "org"),
        ("net.fetch", "workspace"),
        ("fs.read", "workspace"),
        ("shell.exec", "workspace"),
    ]
    # Policy changes move policyRevision, not the config hash.
    before = described["policyRevision"]
    client.put(
        f"/api/v1/workspaces/{ws.workspace_id}/policies",
        json={"default_decision": "allow", "rules": []},
        headers=ADMIN,
    )
    after = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet/config", headers=ADMIN).json()
    assert after["policyRevision"] != before
    assert after["configRevision"] == described["configRevision"]


def test_fleet_config_hides_other_workspaces(client: TestClient) -> None:
    mine = make_workspace(client, name="a")
    other = make_workspace(client, name="b")
    response = client.get(
        f"/api/v1/workspaces/{other.workspace_id}/fleet/config", headers=auth(mine.api_key)
    )
    assert response.status_code == 404
    assert client.get(f"/api/v1/workspaces/{mine.workspace_id}/fleet/config").status_code == 401


def test_fleet_paging_filters_and_search(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client)
    key = auth(ws.api_key)
    for index in range(7):
        client.post(
            "/api/v1/heartbeat",
            json={
                "agent_id": f"agent-{index}",
                "session_id": f"s{index}",
                "runtime_version": "3.12.6",
            },
            headers=key,
        )
    clock.advance(400)
    for index in range(3):
        client.post(
            "/api/v1/heartbeat",
            json={"agent_id": f"agent-{index}", "session_id": f"s{index}"},
            headers=key,
        )
    seen = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            f"/api/v1/workspaces/{ws.workspace_id}/fleet", params=params, headers=ADMIN
        ).json()
        assert page["summary"]["total"] == 7
        seen += [r["agentId"] for r in page["runtimes"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"agent-{i}" for i in range(7)]
    stale = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/fleet", params={"health": "stale"}, headers=ADMIN
    ).json()
    assert [r["agentId"] for r in stale["runtimes"]] == [f"agent-{i}" for i in range(3, 7)]
    assert stale["summary"]["total"] == 4
    both = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/fleet",
        params={"health": "stale,connected", "drift": "needs_reconcile"},
        headers=ADMIN,
    ).json()
    assert both["summary"]["total"] == 7
    found = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/fleet", params={"q": "NT-5"}, headers=ADMIN
    ).json()
    assert [r["agentId"] for r in found["runtimes"]] == ["agent-5"]
    literal = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/fleet", params={"q": "%"}, headers=ADMIN
    ).json()
    assert literal["runtimes"] == []


def test_probes_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok"
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in (
        "/api/v1/heartbeat",
        "/api/v1/enroll",
        "/api/v1/sessions/register",
        "/api/v1/workspaces/{workspace_id}/fleet",
        "/api/v1/workspaces/{workspace_id}/config",
    ):
        assert path in paths


def test_security_headers_on_every_response(client: TestClient) -> None:
    ws = make_workspace(client)
    key = auth(ws.api_key)
    pulled = client.get("/api/v1/config", headers=key)
    responses = [
        client.get("/healthz"),
        client.get("/api/v1/workspaces/nope", headers=ADMIN),
        client.post("/api/v1/heartbeat", json={"session_id": "s"}, headers=key),
        # Answered from the cache by the hot path, in front of the middleware stack.
        client.post("/api/v1/heartbeat", json={"session_id": "s"}, headers=key),
        client.get("/api/v1/config", headers={**key, "If-None-Match": pulled.headers["etag"]}),
        client.post("/api/v1/events", content=b"x" * 70_000, headers=key),
        # A cached credential's oversized heartbeat is handed on, and refused as too large.
        client.post(
            "/api/v1/heartbeat",
            content=b'{"session_id": "s", "pad": "' + b"x" * 70_000 + b'"}',
            headers={**key, "Content-Type": "application/json"},
        ),
        # Streamed without a declared length, to the hot path and to a route: past the limit
        # the answer is 413 (not the 400 FastAPI gives a body it could not read).
        client.post(
            "/api/v1/heartbeat",
            content=iter([b"x" * 40_000, b"x" * 40_000]),
            headers={**key, "Content-Type": "application/json"},
        ),
        client.post(
            "/api/v1/events",
            content=iter([b"x" * 40_000, b"x" * 40_000]),
            headers={**key, "Content-Type": "application/json"},
        ),
    ]
    assert [r.status_code for r in responses] == [200, 404, 200, 200, 304, 413, 413, 413, 413]
    assert responses[-1].json()["error"]["code"] == "payload_too_large"
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["strict-transport-security"].startswith("max-age=")
