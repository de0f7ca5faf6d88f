"""Tenant isolation and roles, route by route, generated from the app's route table.

Every operator and fleet route has a row naming the least role that may call it. For each
route, every caller below that role is refused (404 when it may not even see the resource,
403 when it already knows it exists) and changes nothing, and every caller at or above it
succeeds. A route without a row fails `test_every_route_has_a_row`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetplane.domain.tokens import TokenKind, new_token
from fleetplane.services import accounts, credentials, members, webhooks, workspaces
from fleetplane.store.db import Database
from fleetplane.store.models import Base
from tests.conftest import START, Clock, auth, snapshot

# Roles from most to least privileged within org A; "outsider" owns org B only.
ROLES = [
    "superuser",
    "owner",
    "org_admin",
    "ws_admin",
    "ws_operator",
    "ws_viewer",
    "org_member",
    "outsider",
]

# Who may act, per least role. Workspace-only members do not see the org itself.
ALLOWED: dict[str, set[str]] = {
    "any": set(ROLES),
    "ws_read": {"superuser", "owner", "org_admin", "ws_admin", "ws_operator", "ws_viewer"},
    "ws_operate": {"superuser", "owner", "org_admin", "ws_admin", "ws_operator"},
    "ws_admin": {"superuser", "owner", "org_admin", "ws_admin"},
    "org_read": {"superuser", "owner", "org_admin", "org_member"},
    "org_admin": {"superuser", "owner", "org_admin"},
    "org_owner": {"superuser", "owner"},
    "superuser": {"superuser"},
}
# Callers who know the resource exists get 403; the others get 404.
KNOWS_WORKSPACE = {"ws_admin", "ws_operator", "ws_viewer"}
KNOWS_ORG = {"org_admin", "org_member"}


@dataclass
class World:
    tokens: dict[str, str]
    org_id: str
    workspace_id: str
    runtime_id: str
    enrollment_id: str
    target_user_id: str
    own_token_ids: dict[str, str]
    counter: int = 0
    webhook_id: str = ""


def build_world(database: Database) -> World:
    """Org A with one user per role, a workspace, a runtime, an enrollment; org B outside."""
    now = START
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}
    with database.unit_of_work() as session:
        users = {}
        for role in [*ROLES, "target"]:
            users[role] = accounts.create_user(
                session,
                email=f"{role}@example.com",
                password=None,
                is_superuser=role == "superuser",
                actor="test",
                now=now,
            )
            row, token = accounts.create_operator_token(
                session, user=users[role], name=role, now=now
            )
            tokens[role] = token
            token_ids[role] = row.id
        org = workspaces.create_org(session, name="A", owner=users["owner"], now=now)
        workspaces.create_org(session, name="B", owner=users["outsider"], now=now)
        for role, org_role in (
            ("org_admin", "admin"),
            ("org_member", "member"),
            ("target", "member"),
        ):
            members.add_org_member(
                session, org=org, email=f"{role}@example.com", role=org_role, actor="test", now=now
            )
        workspace = workspaces.create_workspace(
            session,
            org=org,
            name="W",
            policy_mode=None,
            dev_override_until=None,
            actor="test",
            now=now,
        )
        for role, ws_role in (
            ("ws_admin", "admin"),
            ("ws_operator", "operator"),
            ("ws_viewer", "viewer"),
            ("target", "viewer"),
        ):
            members.add_workspace_member(
                session,
                workspace=workspace,
                email=f"{role}@example.com",
                role=ws_role,
                actor="test",
                now=now,
            )
        runtime = credentials.preregister_runtime(
            session, workspace=workspace, agent_id="r1", labels=None, actor="test", now=now
        )
        enrollment = credentials.create_enrollment(
            session,
            workspace=workspace,
            expires_in_seconds=600,
            max_uses=None,
            default_ttl_seconds=600,
            actor="test",
            now=now,
        )
        # Port 9 (discard) on the loopback: a ping's delivery goes nowhere else.
        webhook = webhooks.create_webhook(
            session,
            workspace=workspace,
            url="http://127.0.0.1:9/hook",
            events=["*"],
            secret=None,
            active=True,
            actor="test",
            now=now,
        )
        return World(
            tokens,
            org.id,
            workspace.id,
            runtime.runtime.id,
            enrollment.row.id,
            users["target"].id,
            token_ids,
            webhook_id=webhook.id,
        )


Body = Callable[[World, str], dict[str, Any]]


def _json(value: Any) -> Body:
    return lambda world, role: {"json": value}


def _unique(make: Callable[[str], Any]) -> Body:
    def body(world: World, role: str) -> dict[str, Any]:
        world.counter += 1
        return {"json": make(f"{role}-{world.counter}")}

    return body


NEW_USER = _unique(lambda tag: {"email": f"new-{tag}@example.com", "password": "long-enough"})
POLICY = _json({"default_decision": "deny", "rules": [{"id": "shell", "decision": "deny"}]})
UNTIL = (START + timedelta(days=1)).isoformat()


def _new_member(role: str) -> Body:
    """Adds a fresh user first (through the superuser) so that adding never conflicts."""

    def body(world: World, caller: str) -> dict[str, Any]:
        world.counter += 1
        return {
            "json": {"email": f"member-{world.counter}@example.com", "role": role},
            "needs_user": f"member-{world.counter}@example.com",
        }

    return body


# (method, path) -> (least role, request body factory or None)
ROWS: dict[tuple[str, str], tuple[str, Body | None]] = {
    ("GET", "/api/v1/me"): ("any", None),
    ("GET", "/api/v1/me/tokens"): ("any", None),
    ("POST", "/api/v1/me/tokens"): ("any", _json({"name": "t"})),
    ("DELETE", "/api/v1/me/tokens/{token_id}"): ("any", None),
    ("POST", "/api/v1/users"): ("superuser", NEW_USER),
    ("POST", "/api/v1/auth/logout"): ("any", None),
    ("POST", "/api/v1/orgs"): ("any", _json({"name": "new org"})),
    ("GET", "/api/v1/orgs"): ("any", None),
    ("GET", "/api/v1/workspaces"): ("any", None),
    ("GET", "/api/v1/orgs/{org_id}"): ("org_read", None),
    ("PATCH", "/api/v1/orgs/{org_id}"): ("org_admin", _json({"name": "renamed"})),
    ("DELETE", "/api/v1/orgs/{org_id}"): ("org_owner", None),
    ("GET", "/api/v1/orgs/{org_id}/workspaces"): ("org_read", None),
    ("POST", "/api/v1/orgs/{org_id}/workspaces"): ("org_admin", _json({"name": "w2"})),
    ("GET", "/api/v1/orgs/{org_id}/members"): ("org_read", None),
    ("POST", "/api/v1/orgs/{org_id}/members"): ("org_admin", _new_member("member")),
    ("PATCH", "/api/v1/orgs/{org_id}/members/{user_id}"): ("org_owner", _json({"role": "admin"})),
    ("DELETE", "/api/v1/orgs/{org_id}/members/{user_id}"): ("org_owner", None),
    ("GET", "/api/v1/orgs/{org_id}/policies"): ("org_read", None),
    ("PUT", "/api/v1/orgs/{org_id}/policies"): ("org_admin", POLICY),
    ("GET", "/api/v1/workspaces/{workspace_id}"): ("ws_read", None),
    ("PATCH", "/api/v1/workspaces/{workspace_id}"): (
        "ws_admin",
        _json({"policyMode": "dev-override", "devOverrideUntil": UNTIL}),
    ),
    ("DELETE", "/api/v1/workspaces/{workspace_id}"): ("ws_admin", None),
    ("PUT", "/api/v1/workspaces/{workspace_id}/config"): ("ws_admin", _unique(lambda t: {"t": t})),
    ("GET", "/api/v1/workspaces/{workspace_id}/config/revisions"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/config/revisions/{number}"): ("ws_read", None),
    ("POST", "/api/v1/workspaces/{workspace_id}/config/rollback"): (
        "ws_admin",
        _json({"number": 1}),
    ),
    ("GET", "/api/v1/workspaces/{workspace_id}/config/diff"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/policies"): ("ws_read", None),
    ("PUT", "/api/v1/workspaces/{workspace_id}/policies"): ("ws_admin", POLICY),
    ("POST", "/api/v1/workspaces/{workspace_id}/policies/preview"): (
        "ws_read",
        _json({"local": {"default_decision": "deny", "rules": []}}),
    ),
    ("POST", "/api/v1/workspaces/{workspace_id}/api-key"): ("ws_admin", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/enrollments"): ("ws_operate", None),
    ("POST", "/api/v1/workspaces/{workspace_id}/enrollments"): ("ws_operate", _json({})),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/enrollments/{enrollment_id}"): (
        "ws_operate",
        None,
    ),
    ("POST", "/api/v1/workspaces/{workspace_id}/runtimes"): (
        "ws_operate",
        _unique(lambda t: {"agentId": t}),
    ),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/runtimes/{runtime_id}"): ("ws_operate", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/members"): ("ws_read", None),
    ("POST", "/api/v1/workspaces/{workspace_id}/members"): ("ws_admin", _new_member("viewer")),
    ("PATCH", "/api/v1/workspaces/{workspace_id}/members/{user_id}"): (
        "ws_admin",
        _json({"role": "operator"}),
    ),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/members/{user_id}"): ("ws_admin", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/audit"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/fleet"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/fleet/config"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/runtimes/{runtime_id}/history"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/alerts"): ("ws_read", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/alerts/thresholds"): ("ws_read", None),
    ("PUT", "/api/v1/workspaces/{workspace_id}/alerts/thresholds"): (
        "ws_admin",
        _json({"alignedShareBelow": 50, "upgradeRequired": True}),
    ),
    ("GET", "/api/v1/workspaces/{workspace_id}/webhooks"): ("ws_admin", None),
    ("POST", "/api/v1/workspaces/{workspace_id}/webhooks"): (
        "ws_admin",
        _json({"url": "http://127.0.0.1:9/other", "events": ["runtime.health_changed"]}),
    ),
    ("GET", "/api/v1/workspaces/{workspace_id}/webhooks/{webhook_id}"): ("ws_admin", None),
    ("PATCH", "/api/v1/workspaces/{workspace_id}/webhooks/{webhook_id}"): (
        "ws_admin",
        _json({"active": False}),
    ),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/webhooks/{webhook_id}"): ("ws_admin", None),
    ("POST", "/api/v1/workspaces/{workspace_id}/webhooks/{webhook_id}/ping"): ("ws_admin", None),
    ("GET", "/api/v1/workspaces/{workspace_id}/webhooks/{webhook_id}/deliveries"): (
        "ws_admin",
        None,
    ),
}
# Routes outside the operator matrix, each tested in its own module.
NOT_OPERATOR = {
    ("POST", "/api/v1/heartbeat"),
    ("POST", "/api/v1/config"),
    ("GET", "/api/v1/config"),
    ("POST", "/api/v1/policies"),
    ("GET", "/api/v1/policies"),
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/telemetry"),
    ("POST", "/api/v1/evidence"),
    ("POST", "/api/v1/sessions/register"),
    ("POST", "/api/v1/sessions"),
    ("POST", "/api/v1/sessions/deregister"),
    ("POST", "/api/v1/authenticate"),
    ("POST", "/api/v1/enroll"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}


def app_routes(client: TestClient) -> set[tuple[str, str]]:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


def test_every_route_has_a_row(client: TestClient) -> None:
    routes = app_routes(client)
    assert routes - set(ROWS) - NOT_OPERATOR == set(), "add a row to ROWS for new routes"
    assert set(ROWS) - routes == set()


def _url(path: str, world: World, role: str) -> str:
    values = {
        "org_id": world.org_id,
        "workspace_id": world.workspace_id,
        "runtime_id": world.runtime_id,
        "enrollment_id": world.enrollment_id,
        "user_id": world.target_user_id,
        "token_id": world.own_token_ids.get(role, "x"),
        "number": "1",
        "webhook_id": world.webhook_id,
    }
    url = path.format(**values)
    return url + "?from=1&to=1" if url.endswith("/config/diff") else url


def _prepare(client: TestClient, world: World, route: tuple[str, str], role: str) -> dict[str, Any]:
    """The request's arguments, after creating any user it needs to exist."""
    _, body = ROWS[route]
    kwargs = body(world, role) if body else {}
    email = kwargs.pop("needs_user", None)
    if email:
        created = client.post(
            "/api/v1/users",
            json={"email": email, "password": "long-enough"},
            headers=auth(world.tokens["superuser"]),
        )
        assert created.status_code == 201
    return kwargs


def _call(
    client: TestClient, world: World, route: tuple[str, str], role: str, kwargs: dict[str, Any]
) -> Any:
    method, path = route
    return client.request(
        method, _url(path, world, role), headers=auth(world.tokens[role]), **kwargs
    )


def _reset(database: Database) -> None:
    with database.unit_of_work() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())


@pytest.mark.parametrize("route", sorted(ROWS), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_isolation(
    route: tuple[str, str], client: TestClient, database: Database, clock: Clock
) -> None:
    least, _ = ROWS[route]
    allowed = ALLOWED[least]
    _reset(database)
    world = build_world(database)
    for role in ROLES:
        if role in allowed:
            continue
        kwargs = _prepare(client, world, route, role)
        before = snapshot(database)
        response = _call(client, world, route, role, kwargs)
        knows = (role in KNOWS_WORKSPACE and least.startswith("ws_")) or (
            role in KNOWS_ORG and least.startswith("org_")
        )
        if least == "superuser":
            knows = True
        expected = 403 if knows else 404
        assert response.status_code == expected, (role, response.text)
        assert snapshot(database) == before, role
    for role in ROLES:
        if role not in allowed:
            continue
        # A fresh world per caller: a successful DELETE must not hide the next caller's result.
        _reset(database)
        world = build_world(database)
        response = _call(client, world, route, role, _prepare(client, world, route, role))
        assert response.is_success, (role, response.status_code, response.text)


def test_new_token_kinds_are_not_operator_tokens(client: TestClient) -> None:
    for kind in (TokenKind.WORKSPACE_KEY, TokenKind.RUNTIME, TokenKind.ENROLLMENT):
        assert client.get("/api/v1/me", headers=auth(new_token(kind))).status_code == 401
