"""Accounts, sessions, tokens, memberships, secrets at rest and the audit trail."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from fleetplane.store.db import Database
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, auth, make_workspace, snapshot


def make_user(client: TestClient, email: str, password: str = "correct horse") -> str:
    created = client.post(
        "/api/v1/users", json={"email": email, "password": password}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def login(client: TestClient, email: str, password: str = "correct horse") -> str:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["csrfToken"]


def test_session_cookie_csrf_and_logout(client: TestClient) -> None:
    make_user(client, "ana@example.com")
    response = client.post(
        "/api/v1/auth/login", json={"email": "Ana@Example.com", "password": "correct horse"}
    )
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" in cookie  # the test server's public URL is https
    csrf = response.json()["csrfToken"]
    assert client.get("/api/v1/me").json()["email"] == "ana@example.com"
    # A state-changing call on the cookie needs the CSRF token.
    refused = client.post("/api/v1/orgs", json={"name": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    created = client.post("/api/v1/orgs", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201
    me = client.get("/api/v1/me").json()
    assert me["orgs"] == [{"id": created.json()["id"], "name": "x", "role": "owner"}]
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/me").status_code == 401


def test_failed_logins_are_throttled_per_account(client: TestClient, clock: Clock) -> None:
    make_user(client, "bo@example.com")
    for _ in range(5):
        wrong = client.post(
            "/api/v1/auth/login", json={"email": "bo@example.com", "password": "nope nope"}
        )
        assert wrong.status_code == 401
    throttled = client.post(
        "/api/v1/auth/login", json={"email": "bo@example.com", "password": "correct horse"}
    )
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    clock.advance(15 * 60 + 1)
    login(client, "bo@example.com")
    unknown = client.post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "whatever1"}
    )
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_credentials"


def test_operator_tokens_listed_by_prefix_and_revoked(client: TestClient) -> None:
    created = client.post("/api/v1/me/tokens", json={"name": "ci"}, headers=ADMIN).json()
    token = created["token"]
    listed = client.get("/api/v1/me/tokens", headers=auth(token)).json()["items"]
    assert {item["name"] for item in listed} == {"bootstrap", "ci"}
    assert all(token not in str(item) and len(item["prefix"]) == 10 for item in listed)
    assert client.delete(f"/api/v1/me/tokens/{created['id']}", headers=ADMIN).status_code == 204
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401


def test_org_keeps_an_owner_and_roles_change(client: TestClient) -> None:
    org = client.post("/api/v1/orgs", json={"name": "o"}, headers=ADMIN).json()
    owner_id = client.get("/api/v1/me", headers=ADMIN).json()["id"]
    last = client.delete(f"/api/v1/orgs/{org['id']}/members/{owner_id}", headers=ADMIN)
    assert last.status_code == 409
    assert last.json()["error"]["code"] == "last_owner"
    demote = client.patch(
        f"/api/v1/orgs/{org['id']}/members/{owner_id}", json={"role": "admin"}, headers=ADMIN
    )
    assert demote.status_code == 409
    other = make_user(client, "co@example.com")
    client.post(
        f"/api/v1/orgs/{org['id']}/members",
        json={"email": "co@example.com", "role": "owner"},
        headers=ADMIN,
    )
    assert (
        client.patch(
            f"/api/v1/orgs/{org['id']}/members/{owner_id}", json={"role": "admin"}, headers=ADMIN
        ).status_code
        == 200
    )
    roles = {
        m["userId"]: m["role"]
        for m in client.get(f"/api/v1/orgs/{org['id']}/members", headers=ADMIN).json()["items"]
    }
    assert roles == {owner_id: "admin", other: "owner"}
    bad = client.post(
        f"/api/v1/orgs/{org['id']}/members",
        json={"email": "co@example.com", "role": "king"},
        headers=ADMIN,
    )
    assert bad.status_code == 422
    missing = client.post(
        f"/api/v1/orgs/{org['id']}/members",
        json={"email": "nobody@example.com", "role": "member"},
        headers=ADMIN,
    )
    assert missing.status_code == 404


def test_revoked_credentials_all_get_401(client: TestClient, clock: Clock) -> None:
    ws = make_workspace(client)
    path = f"/api/v1/workspaces/{ws.workspace_id}"
    enrollment = client.post(f"{path}/enrollments", json={"maxUses": 5}, headers=ADMIN).json()
    assert client.delete(f"{path}/enrollments/{enrollment['id']}", headers=ADMIN).status_code == 204
    listed = client.get(f"{path}/enrollments", headers=ADMIN).json()["items"]
    assert listed[0]["revokedAt"] is not None
    assert "token" not in listed[0]
    revoked = client.post(
        "/api/v1/enroll", json={"enrollment_token": enrollment["token"], "agent_id": "a"}
    )
    assert revoked.status_code == 401


def test_deleting_a_workspace_removes_runtimes_and_keys(client: TestClient) -> None:
    ws = make_workspace(client)
    client.post("/api/v1/heartbeat", json={"session_id": "s"}, headers=auth(ws.api_key))
    assert client.delete(f"/api/v1/workspaces/{ws.workspace_id}", headers=ADMIN).status_code == 204
    assert client.get(f"/api/v1/workspaces/{ws.workspace_id}", headers=ADMIN).status_code == 404
    assert (
        client.post(
            "/api/v1/heartbeat", json={"session_id": "s"}, headers=auth(ws.api_key)
        ).status_code
        == 401
    )


def test_database_holds_no_plaintext_secret(client: TestClient, database: Database) -> None:
    ws = make_workspace(client)
    secrets = [BOOTSTRAP_TOKEN, ws.api_key, "correct horse"]
    make_user(client, "cy@example.com")
    login(client, "cy@example.com")
    secrets.append(client.cookies.get("fp_session") or "")
    client.cookies.clear()
    secrets.append(
        client.post("/api/v1/me/tokens", json={"name": "x"}, headers=ADMIN).json()["token"]
    )
    enrollment = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/enrollments", headers=ADMIN
    ).json()["token"]
    secrets.append(enrollment)
    enrolled = client.post(
        "/api/v1/enroll", json={"enrollment_token": enrollment, "agent_id": "a"}
    ).json()
    secrets.append(enrolled["credential"])
    issued = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "b"}, headers=ADMIN
    ).json()
    secrets.append(issued["credential"])
    authenticated = client.post(
        "/api/v1/authenticate",
        json={"workspace_id": ws.workspace_id, "org_id": ws.org_id, "agent_id": "c"},
        headers=auth(ws.api_key),
    ).json()
    secrets.append(authenticated["token"])
    dump = str(snapshot(database))
    assert all(len(secret) > 8 for secret in secrets)
    for secret in secrets:
        assert secret not in dump
        # Not even the random part without its prefix.
        assert re.sub(r"^fp_[a-z]+_", "", secret) not in dump


def test_twenty_mutations_leave_twenty_audit_rows(client: TestClient, database: Database) -> None:
    org = client.post("/api/v1/orgs", json={"name": "o"}, headers=ADMIN).json()  # 1
    ws = client.post(
        f"/api/v1/orgs/{org['id']}/workspaces", json={"name": "w"}, headers=ADMIN
    ).json()  # 2
    path = f"/api/v1/workspaces/{ws['id']}"
    make_user(client, "dee@example.com")  # 3 (not workspace-scoped)
    second = client.post("/api/v1/me/tokens", json={"name": "dee"}, headers=ADMIN)  # 4 (user)
    assert second.status_code == 201
    client.post(
        f"{path}/members", json={"email": "dee@example.com", "role": "admin"}, headers=ADMIN
    )  # 5
    dee = client.post(
        "/api/v1/auth/login", json={"email": "dee@example.com", "password": "correct horse"}
    ).json()
    client.cookies.clear()
    assert dee["user"]["email"] == "dee@example.com"
    mutations = [
        ("put", f"{path}/config", {"a": 1}),
        ("put", f"{path}/config", {"a": 2}),
        ("put", f"{path}/policies", {"default_decision": "allow", "rules": []}),
        ("patch", path, {"name": "w2"}),
        ("post", f"{path}/api-key", None),
        ("post", f"{path}/enrollments", {}),
        ("post", f"{path}/runtimes", {"agentId": "r1"}),
        ("post", f"{path}/runtimes", {"agentId": "r2"}),
        ("put", f"{path}/config", {"a": 3}),
        ("post", f"{path}/api-key", None),
        ("patch", path, {"policyMode": "tighten-only"}),
        ("put", f"{path}/config", {"a": 4}),
        ("post", f"{path}/enrollments", {}),
        ("put", f"{path}/policies", {"default_decision": "deny", "rules": []}),
    ]
    for method, url, body in mutations:  # 6..19
        response = client.request(method.upper(), url, json=body, headers=ADMIN)
        assert response.is_success, response.text
    runtime_id = client.get(f"{path}/fleet", headers=ADMIN).json()["runtimes"][0]["id"]
    assert client.delete(f"{path}/runtimes/{runtime_id}", headers=ADMIN).status_code == 204  # 20
    # Failures leave no row.
    before = snapshot(database)
    assert client.put(f"{path}/config", json=[1], headers=ADMIN).status_code == 422
    assert client.patch(path, json={"policyMode": "x"}, headers=ADMIN).status_code == 422
    assert (
        client.put(
            f"{path}/policies", json={"default_decision": "maybe"}, headers=ADMIN
        ).status_code
        == 422
    )
    assert snapshot(database) == before
    items = client.get(f"{path}/audit", params={"limit": 100}, headers=ADMIN).json()["items"]
    workspace_actions = [item["action"] for item in reversed(items)]
    assert workspace_actions == [
        "workspace.create",
        "workspace.member.add",
        "config.update",
        "config.update",
        "workspace.policies.update",
        "workspace.update",
        "api_key.regenerate",
        "enrollment.create",
        "runtime.preregister",
        "runtime.preregister",
        "config.update",
        "api_key.regenerate",
        "workspace.update",
        "config.update",
        "enrollment.create",
        "workspace.policies.update",
        "runtime.revoke",
    ]
    assert {item["actor"] for item in items} == {"admin"}
    dump = snapshot(database)["audit_log"]
    # 17 workspace rows + org.create + user.create + token.create = 20 (+ the bootstrap's own 2).
    assert len(dump) == 20 + 2
