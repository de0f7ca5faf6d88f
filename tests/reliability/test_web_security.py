"""Web security: security headers on every kind of response, Secure cookies over HTTPS, a new
session at every sign-in, CSRF on cookie-authenticated writes, constant-time comparison of
secrets, and no issued secret in any log line of a full scenario (in process at DEBUG, and in
the output of `fleetplane serve --access-log`)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fleetplane.api.app import create_app
from fleetplane.services import signin
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, auth
from tests.reliability.servers import running

PASSWORD = "correct horse battery staple"


def app_client(database: Database, public_url: str) -> TestClient:
    settings = Settings(
        database_url=database.url,
        public_url=public_url,
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        max_body_bytes=4096,
    )
    app = create_app(settings, database=database, clock=Clock())
    return TestClient(app, base_url=public_url, raise_server_exceptions=False)


@pytest.fixture
def https_client(sqlite_database: Database) -> Iterator[TestClient]:
    with app_client(sqlite_database, "https://fleet.test") as client:
        yield client


def scenario(http: Any) -> list[str]:
    """A full life cycle through the API; returns every secret it was shown or sent."""
    secrets = [BOOTSTRAP_TOKEN, PASSWORD]
    admin = {"headers": ADMIN}
    user = http.post(
        "/api/v1/users", json={"email": "ops@example.com", "password": PASSWORD}, **admin
    )
    assert user.status_code == 201, user.text
    login = http.post("/api/v1/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    secrets += [login.cookies["fp_session"], login.json()["csrfToken"]]
    failed = http.post(
        "/api/v1/auth/login", json={"email": "ops@example.com", "password": "nope" + PASSWORD}
    )
    assert failed.status_code == 401
    token = http.post("/api/v1/me/tokens", json={"name": "ci"}, **admin).json()["token"]
    secrets.append(token)
    org = http.post("/api/v1/orgs", json={"name": "o"}, headers=auth(token)).json()
    ws = http.post(f"/api/v1/orgs/{org['id']}/workspaces", json={"name": "w"}, **admin).json()
    base = f"/api/v1/workspaces/{ws['id']}"
    key = http.post(f"{base}/api-key", **admin).json()["apiKey"]
    enrollment = http.post(f"{base}/enrollments", **admin).json()["token"]
    pre = http.post(f"{base}/runtimes", json={"agentId": "pre"}, **admin).json()["credential"]
    enrolled = http.post("/api/v1/enroll", json={"enrollment_token": enrollment, "agent_id": "e1"})
    assert enrolled.status_code == 200, enrolled.text
    credential = enrolled.json()["credential"]
    exchanged = http.post(
        "/api/v1/authenticate",
        json={"workspace_id": ws["id"], "org_id": org["id"], "agent_id": "a1"},
        headers=auth(key),
    ).json()["token"]
    secrets += [key, enrollment, pre, credential, exchanged]
    for held in (key, pre, credential, exchanged):
        for _ in range(2):  # the second heartbeat takes the hot path
            beat = http.post(
                "/api/v1/heartbeat", json={"session_id": "s", "agent_id": "k"}, headers=auth(held)
            )
            assert beat.status_code == 200, beat.text
        assert http.post("/api/v1/config", json={}, headers=auth(held)).status_code == 200
    # Refusals: a revoked enrollment token, a stale key, wrong and malformed credentials.
    used = http.post(
        "/api/v1/enroll", json={"enrollment_token": enrollment + "x", "agent_id": "e2"}
    )
    assert used.status_code == 401
    rotated = http.post(f"{base}/api-key", **admin).json()["apiKey"]
    secrets.append(rotated)
    assert (
        http.post("/api/v1/heartbeat", json={"session_id": "s"}, headers=auth(key)).status_code
        == 401
    )
    assert http.get("/api/v1/me", headers=auth(token + "tampered")).status_code == 401
    assert http.get(f"{base}/fleet", headers=auth(exchanged)).status_code == 401
    http.delete(f"/api/v1/workspaces/{ws['id']}/runtimes/{enrolled.json()['runtime_id']}", **admin)
    assert (
        http.post(
            "/api/v1/heartbeat", json={"session_id": "s"}, headers=auth(credential)
        ).status_code
        == 401
    )
    return secrets


def test_no_secret_reaches_the_logs_in_process(
    https_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's statements included
    secrets = scenario(https_client)
    assert len(secrets) == 11
    captured = caplog.text
    assert "POST" in captured or "INSERT" in captured, (
        "nothing was logged: the check proves nothing"
    )
    leaked = [secret[:10] + "…" for secret in secrets if secret in captured]
    assert leaked == []


def test_no_secret_reaches_the_server_logs(tmp_path: Path, sqlite_template: Path) -> None:
    database = tmp_path / "logs.db"
    database.write_bytes(sqlite_template.read_bytes())
    env = {
        "FLEETPLANE_DATABASE_URL": f"sqlite:///{database}",
        "FLEETPLANE_BOOTSTRAP_ADMIN_TOKEN": BOOTSTRAP_TOKEN,
        "FLEETPLANE_PUBLIC_URL": "https://fleet.test",
    }
    with running(tmp_path, env, name="logs") as server:
        server_url = server.url
        with httpx.Client(base_url=server_url, timeout=10) as http:
            secrets = scenario(http)
        log = server.read_log()
    assert "POST /api/v1/heartbeat" in log or "created the bootstrap superuser" in log
    assert [secret[:10] + "…" for secret in secrets if secret in log] == []


EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "strict-transport-security": "max-age=31536000",
}


def test_security_headers_on_every_kind_of_response(https_client: TestClient) -> None:
    made = https_client.post("/api/v1/orgs", json={"name": "o"}, headers=ADMIN)
    answers = {
        "probe": https_client.get("/healthz"),
        "readiness": https_client.get("/readyz"),
        "index": https_client.get("/"),
        "openapi": https_client.get("/api/v1/openapi.json"),
        "created": made,
        "unknown route": https_client.get("/api/v1/nothing-here"),
        "wrong method": https_client.delete("/api/v1/heartbeat"),
        "unauthenticated": https_client.post("/api/v1/heartbeat", json={}),
        "validation": https_client.post("/api/v1/orgs", json={"name": ""}, headers=ADMIN),
        "malformed json": https_client.post(
            "/api/v1/orgs", content=b"{", headers={**ADMIN, "Content-Type": "application/json"}
        ),
        "too large": https_client.post("/api/v1/events", content=b"x" * 5000, headers=ADMIN),
        "not found": https_client.get("/api/v1/workspaces/missing", headers=ADMIN),
    }
    assert {name: a.status_code for name, a in answers.items()} == {
        "probe": 200,
        "readiness": 200,
        "index": 200,
        "openapi": 200,
        "created": 201,
        "unknown route": 404,
        "wrong method": 405,
        "unauthenticated": 401,
        "validation": 422,
        "malformed json": 400,
        "too large": 413,
        "not found": 404,
    }
    for name, answer in answers.items():
        for header, value in EXPECTED_HEADERS.items():
            assert answer.headers.get(header) == value, (name, header)
        policy = answer.headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["frame-ancestors"] == "'none'", name
        assert "unsafe-inline" not in directives["script-src"], name
        assert directives["object-src"] == "'none'", name


def test_cookies_are_secure_over_https_only(tmp_path: Path, sqlite_template: Path) -> None:
    for scheme, secure in (("https", True), ("http", False)):
        path = tmp_path / f"{scheme}.db"
        path.write_bytes(sqlite_template.read_bytes())
        database = Database(f"sqlite+pysqlite:///{path}")
        with app_client(database, f"{scheme}://fleet.test") as client:
            client.post(
                "/api/v1/users", json={"email": "a@b.io", "password": PASSWORD}, headers=ADMIN
            )
            login = client.post(
                "/api/v1/auth/login", json={"email": "a@b.io", "password": PASSWORD}
            )
            assert login.status_code == 200
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie
            assert "samesite=lax" in cookie
            assert ("; secure" in cookie) is secure, cookie
            assert ("strict-transport-security" in login.headers) is secure
        database.dispose()


def test_sign_in_issues_a_new_session_and_cookie_writes_need_csrf(https_client: TestClient) -> None:
    https_client.post(
        "/api/v1/users", json={"email": "a@b.io", "password": PASSWORD}, headers=ADMIN
    )
    planted = "attacker-chosen-session-value"
    https_client.cookies.set("fp_session", planted)
    first = https_client.post("/api/v1/auth/login", json={"email": "a@b.io", "password": PASSWORD})
    assert first.status_code == 200
    issued = first.cookies["fp_session"]
    assert issued != planted
    https_client.cookies.clear()
    https_client.cookies.set("fp_session", planted)
    assert https_client.get("/api/v1/me").status_code == 401  # the planted value is no session
    second = https_client.post("/api/v1/auth/login", json={"email": "a@b.io", "password": PASSWORD})
    assert second.cookies["fp_session"] not in (issued, planted)
    assert second.json()["csrfToken"] != first.json()["csrfToken"]

    https_client.cookies.clear()
    https_client.cookies.set("fp_session", second.cookies["fp_session"])
    assert https_client.get("/api/v1/me").status_code == 200
    refused = https_client.post("/api/v1/me/tokens", json={"name": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    wrong = https_client.post(
        "/api/v1/me/tokens", json={"name": "x"}, headers={"X-CSRF-Token": first.json()["csrfToken"]}
    )
    assert wrong.status_code == 403
    right = https_client.post(
        "/api/v1/me/tokens",
        json={"name": "x"},
        headers={"X-CSRF-Token": second.json()["csrfToken"]},
    )
    assert right.status_code == 201


def test_csrf_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bearer tokens are never compared in Python: they are looked up by SHA-256 digest in an
    index. The one secret compared as a string, the CSRF token, goes through hmac.compare_digest."""
    calls = []
    original = hmac.compare_digest

    def recording(left: Any, right: Any) -> bool:
        calls.append((left, right))
        return original(left, right)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert signin.csrf_valid("expected-token", "expected-token")
    assert not signin.csrf_valid("expected-token", "expected-tokex")
    assert not signin.csrf_valid("expected-token", None)
    assert len(calls) == 2
