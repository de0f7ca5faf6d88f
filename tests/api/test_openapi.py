"""The OpenAPI document types every JSON answer under /api/v1.

Each 2xx JSON response of every route in the app's route table is a named schema with its
fields (so a new untyped route fails here), nested objects are typed too, and the real answers
of a scenario that reaches every such route match the schemas documented for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import ValidationError

from fleetplane.api import responses
from fleetplane.api.alerts import Alerting
from fleetplane.domain.policy import DECISIONS, POLICY_MODES
from fleetplane.services.access import ORG_ROLES, WORKSPACE_ROLES, Level
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.alerting_support import alert_app, receiver
from tests.conftest import ADMIN, Clock, auth

API = "/api/v1"
SCHEMAS = "#/components/schemas/"
# Values that are free-form by design: a config document, a delivery's JSON payload.
FREE_FORM = frozenset(
    {"ConfigRevisionDocument.document", "RuntimeConfig.config", "DeliveryRead.payload"}
)


def openapi(client: TestClient) -> dict[str, Any]:
    """The served OpenAPI document."""
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def api_operations(client: TestClient) -> Iterator[tuple[str, str]]:
    """(method, path) of every documented route under /api/v1, from the app's route table."""
    app = client.app
    assert isinstance(app, FastAPI)
    for route in iter_route_contexts(app.routes):
        path = route.path_format or ""
        in_schema = isinstance(route.original_route, APIRoute) and route.include_in_schema
        if in_schema and path.startswith(API):
            for method in sorted(route.methods or ()):
                yield method, path


def json_responses(operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(status, schema) of the operation's documented 2xx JSON answers."""
    for status, response in operation["responses"].items():
        if status.startswith("2") and "application/json" in response.get("content", {}):
            yield status, response["content"]["application/json"]["schema"]


def component_name(schema: dict[str, Any]) -> str:
    """The component a response schema names, directly or as the items of an array."""
    if schema.get("type") == "array":
        schema = schema["items"]
    reference = schema.get("$ref", "")
    assert reference.startswith(SCHEMAS), schema
    return str(reference.removeprefix(SCHEMAS))


def untyped_values(components: dict[str, Any], name: str) -> Iterator[str]:
    """`Component.property` of every value in a component (and those it names) left untyped."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        component = components[current]
        for prop, schema in component.get("properties", {}).items():
            for part in _alternatives(schema):
                if "$ref" in part:
                    pending.append(part["$ref"].removeprefix(SCHEMAS))
                elif _untyped(part) and f"{current}.{prop}" not in FREE_FORM:
                    yield f"{current}.{prop}"


def _alternatives(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A schema's branches, with the items of arrays and the values of maps unwrapped."""
    for part in schema.get("anyOf", [schema]):
        if part.get("type") == "array":
            yield part.get("items", {})
        elif part.get("type") == "object" and isinstance(part.get("additionalProperties"), dict):
            yield part["additionalProperties"]
        else:
            yield part


def _untyped(schema: dict[str, Any]) -> bool:
    if not schema:
        return True  # `Any`
    return schema.get("type") == "object" and not schema.get("properties")


def test_every_json_answer_under_api_v1_is_a_named_typed_schema(client: TestClient) -> None:
    document = openapi(client)
    components = document["components"]["schemas"]
    checked = 0
    for method, path in api_operations(client):
        operation = document["paths"][path][method.lower()]
        statuses = [s for s in operation["responses"] if s.startswith("2")]
        assert statuses, (method, path)
        for status in statuses:
            if status == "204":
                assert "content" not in operation["responses"][status], (method, path)
                continue
            content = operation["responses"][status].get("content", {})
            assert list(content) == ["application/json"], (method, path, status)
            name = component_name(content["application/json"]["schema"])
            assert components[name].get("properties"), (method, path, name)
            assert list(untyped_values(components, name)) == [], (method, path)
            checked += 1
    assert checked >= 60


def test_a_component_missing_fields_or_typing_is_caught() -> None:
    """The checks above are not vacuous: they flag what an untyped route would document."""
    components = {
        "Typed": {"properties": {"labels": {"type": "object", "additionalProperties": {}}}},
        "Loose": {"properties": {"items": {"type": "array", "items": {"type": "object"}}}},
        "Outer": {"properties": {"inner": {"anyOf": [{"$ref": f"{SCHEMAS}Loose"}, {}]}}},
    }
    assert list(untyped_values(components, "Typed")) == ["Typed.labels"]
    assert sorted(untyped_values(components, "Outer")) == ["Loose.items", "Outer.inner"]
    with pytest.raises(AssertionError):
        component_name({"type": "object", "additionalProperties": True})


def test_a_key_the_model_lacks_fails_loudly_and_an_absent_reason_stays_absent() -> None:
    org = {"id": "o1", "name": "acme"}
    assert responses.OrgRead.model_validate(org).model_dump(mode="json") == org
    with pytest.raises(ValidationError, match="extra_forbidden"):
        responses.OrgRead.model_validate({**org, "createdAt": "2026-03-01T12:00:00Z"})
    for rule in (
        {"id": "shell", "decision": "deny"},
        {"id": "git", "decision": "allow", "reason": "r"},
    ):
        assert responses.PolicyRuleRead.model_validate(rule).model_dump(mode="json") == rule


def test_documented_value_sets_are_the_ones_the_services_use() -> None:
    assert get_args(responses.PolicyMode) == POLICY_MODES
    assert get_args(responses.Decision) == DECISIONS
    assert get_args(responses.OrgRole) == ORG_ROLES
    assert get_args(responses.WorkspaceRole) == WORKSPACE_ROLES
    readable = tuple(level.name.lower() for level in Level if level >= Level.READ)
    assert get_args(responses.AccessLevel) == readable


# --- real answers against the documented schemas ---------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request of the scenario and the answer it got."""

    method: str
    route: str
    status: int
    body: Any


@dataclass
class Recorder:
    """Sends requests by route template and keeps every answer."""

    client: TestClient
    exchanges: list[Exchange] = field(default_factory=list)

    def call(
        self,
        method: str,
        route: str,
        at: dict[str, str] | None = None,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Any:
        """Send one request; assert its status and return its JSON body (None without one)."""
        response = self.client.request(
            method,
            API + route.format(**(at or {})),
            headers=ADMIN if headers is None else headers,
            **options,
        )
        assert response.status_code == expect, (method, route, response.text)
        body = response.json() if response.content else None
        self.exchanges.append(Exchange(method, API + route, response.status_code, body))
        return body


def run_scenario(
    client: TestClient, alerting: Alerting, clock: Clock, hook_url: str
) -> list[Exchange]:
    """Reach every JSON route with answers that carry their optional and nullable fields."""
    s = Recorder(client)
    org = s.call("POST", "/orgs", json={"name": "acme"}, expect=201)
    o = {"org_id": org["id"]}
    s.call("GET", "/orgs")
    s.call("GET", "/orgs/{org_id}", o)
    s.call("PATCH", "/orgs/{org_id}", o, json={"name": "acme inc"})
    ws = s.call(
        "POST",
        "/orgs/{org_id}/workspaces",
        o,
        json={"name": "prod", "policyMode": "tighten-only"},
        expect=201,
    )
    w = {"workspace_id": ws["id"]}
    s.call("GET", "/orgs/{org_id}/workspaces", o)
    s.call("GET", "/workspaces")
    s.call("GET", "/workspaces/{workspace_id}", w)

    # Desired state: config revisions, policy sets, the authority mode.
    s.call("PUT", "/workspaces/{workspace_id}/config", w, json={"agents": {"max": 3}})
    s.call(
        "PUT",
        "/workspaces/{workspace_id}/config",
        w,
        content=b"agents:\n  max: 4\n",
        headers={**ADMIN, "content-type": "application/yaml"},
    )
    s.call("GET", "/workspaces/{workspace_id}/config/revisions", w, params={"limit": 2})
    s.call("GET", "/workspaces/{workspace_id}/config/revisions/{number}", {**w, "number": "2"})
    s.call("POST", "/workspaces/{workspace_id}/config/rollback", w, json={"number": 2})
    s.call("GET", "/workspaces/{workspace_id}/config/diff", w, params={"from": 1, "to": 3})
    s.call(
        "PUT",
        "/orgs/{org_id}/policies",
        o,
        json={
            "default_decision": "allow",
            "rules": [
                {"id": "shell", "decision": "deny", "reason": "no shells"},
                {"id": "git", "decision": "allow"},
            ],
        },
    )
    s.call("GET", "/orgs/{org_id}/policies", o)
    s.call(
        "PUT",
        "/workspaces/{workspace_id}/policies",
        w,
        json={"default_decision": "deny", "rules": [{"id": "net", "decision": "allow"}]},
    )
    s.call("GET", "/workspaces/{workspace_id}/policies", w)
    s.call(
        "PATCH",
        "/workspaces/{workspace_id}",
        w,
        json={"policyMode": "dev-override", "devOverrideUntil": "2026-03-01T18:00:00Z"},
    )
    s.call(
        "POST",
        "/workspaces/{workspace_id}/policies/preview",
        w,
        json={
            "local": {"default_decision": "allow", "rules": [{"id": "shell", "decision": "allow"}]}
        },
    )

    # Credentials: the workspace key, enrollment tokens, a pre-registered runtime.
    key = auth(s.call("POST", "/workspaces/{workspace_id}/api-key", w, expect=201)["apiKey"])
    enrollment = s.call(
        "POST", "/workspaces/{workspace_id}/enrollments", w, json={"maxUses": 2}, expect=201
    )
    spare = s.call("POST", "/workspaces/{workspace_id}/enrollments", w, expect=201)
    s.call(
        "DELETE",
        "/workspaces/{workspace_id}/enrollments/{enrollment_id}",
        {**w, "enrollment_id": spare["id"]},
        expect=204,
    )
    s.call("GET", "/workspaces/{workspace_id}/enrollments", w)
    registered = s.call(
        "POST",
        "/workspaces/{workspace_id}/runtimes",
        w,
        json={"agentId": "agent-a", "labels": {"region": "eu"}},
        expect=201,
    )
    credential = auth(registered["credential"])

    # The runtime surface: aligned, failing to apply, too old, never heard from.
    desired = s.call("GET", "/workspaces/{workspace_id}", w)["configRevision"]["hash"]
    scope = {"workspace_id": ws["id"]}
    beat = {**scope, "session_id": "s-b", "agent_id": "agent-b"}
    s.call(
        "POST",
        "/heartbeat",
        json={**beat, "runtime_version": "3.6.0", "config_hash": desired},
        headers=key,
    )
    s.call(
        "POST",
        "/heartbeat",
        json={
            **scope,
            "session_id": "s-a",
            "runtime_version": "3.5.0",
            "config_apply_failed_hash": desired,
            "config_apply_error": "disk full",
        },
        headers=credential,
    )
    s.call(
        "POST",
        "/heartbeat",
        json={**scope, "session_id": "s-old", "agent_id": "agent-old", "runtime_version": "3.0.0"},
        headers=key,
    )
    # The same heartbeat again: answered from the hot path's caches, outside FastAPI.
    s.call(
        "POST",
        "/heartbeat",
        json={**beat, "runtime_version": "3.6.0", "config_hash": desired},
        headers=key,
    )
    s.call("POST", "/config", json=scope, headers=key)
    s.call("GET", "/config", params=scope, headers=key)
    s.call("POST", "/policies", json=scope, headers=credential)
    s.call("GET", "/policies", params=scope, headers=credential)
    warning = {
        "schema_version": 1,
        "kind": "workspace_warning",
        "timestamp": "2026-03-01T12:00:00Z",
    }
    s.call(
        "POST", "/events", json={**scope, "events": [{**warning, "session_id": "s-b"}]}, headers=key
    )
    s.call(
        "POST",
        "/telemetry",
        json={
            **scope,
            "records": [{"metric": "tasks", "value": 2, "timestamp": "2026-03-01T12:00:00Z"}],
        },
        headers=key,
    )
    s.call("POST", "/evidence", json={**scope, "evidence_refs": ["sha256:abc"]}, headers=key)
    s.call(
        "POST",
        "/sessions/register",
        json={**scope, "session_id": "s-c", "agent_id": "agent-c"},
        headers=key,
    )
    s.call(
        "POST", "/sessions", json={**scope, "session_id": "s-d", "agent_id": "agent-c"}, headers=key
    )
    s.call("POST", "/sessions/deregister", json={**scope, "session_id": "s-d"}, headers=key)
    s.call(
        "POST",
        "/authenticate",
        json={**scope, "org_id": org["id"], "agent_id": "agent-b"},
        headers=key,
    )
    s.call(
        "POST",
        "/enroll",
        json={
            "enrollment_token": enrollment["token"],
            "agent_id": "agent-e",
            "runtime_version": "3.6.0",
            "host_id": "host-e",
            "labels": {"team": "core"},
        },
        headers={},
    )
    s.call("GET", "/workspaces/{workspace_id}/fleet", w, params={"limit": 2})
    s.call("GET", "/workspaces/{workspace_id}/fleet/config", w)

    # People: a user, memberships, sign-in, the caller's tokens.
    user = s.call(
        "POST", "/users", json={"email": "ops@example.com", "password": "correct horse"}, expect=201
    )
    member = {"email": user["email"]}
    um = {**o, **w, "user_id": user["id"]}
    s.call("POST", "/orgs/{org_id}/members", o, json={**member, "role": "member"}, expect=201)
    s.call("PATCH", "/orgs/{org_id}/members/{user_id}", um, json={"role": "admin"})
    s.call("GET", "/orgs/{org_id}/members", o)
    s.call(
        "POST",
        "/workspaces/{workspace_id}/members",
        w,
        json={**member, "role": "viewer"},
        expect=201,
    )
    s.call("PATCH", "/workspaces/{workspace_id}/members/{user_id}", um, json={"role": "operator"})
    s.call("GET", "/workspaces/{workspace_id}/members", w)
    s.call(
        "POST",
        "/auth/login",
        json={"email": user["email"], "password": "correct horse"},
        headers={},
    )
    client.cookies.clear()
    s.call("POST", "/me/tokens", json={"name": "ci"}, expect=201)
    s.call("GET", "/me/tokens")
    s.call("GET", "/me")

    # Alerts: thresholds, crossings, webhooks and their delivery log, status history.
    thresholds = {"alignedShareBelow": 90, "dormantShareAbove": 10, "upgradeRequired": True}
    s.call("PUT", "/workspaces/{workspace_id}/alerts/thresholds", w, json=thresholds)
    hook = s.call(
        "POST",
        "/workspaces/{workspace_id}/webhooks",
        w,
        json={"url": hook_url, "events": ["*"]},
        expect=201,
    )
    wh = {**w, "webhook_id": hook["id"]}
    s.call("GET", "/workspaces/{workspace_id}/webhooks", w)
    s.call("GET", "/workspaces/{workspace_id}/webhooks/{webhook_id}", wh)
    s.call("PATCH", "/workspaces/{workspace_id}/webhooks/{webhook_id}", wh, json={"active": True})
    s.call("POST", "/workspaces/{workspace_id}/webhooks/{webhook_id}/ping", wh, expect=202)
    alerting.sweep(force=True)
    clock.advance(2 * 3600)
    s.call("POST", "/heartbeat", json={**beat, "session_id": "s-b2"}, headers=key)
    alerting.sweep(force=True)
    clock.advance(15 * 24 * 3600)  # past the archive age of the runtimes gone quiet
    alerting.sweep(force=True)
    alerting.deliver()
    s.call("GET", "/workspaces/{workspace_id}/alerts/thresholds", w)
    s.call("GET", "/workspaces/{workspace_id}/alerts", w, params={"limit": 2})
    s.call(
        "GET",
        "/workspaces/{workspace_id}/webhooks/{webhook_id}/deliveries",
        wh,
        params={"limit": 2},
    )
    s.call(
        "GET",
        "/workspaces/{workspace_id}/runtimes/{runtime_id}/history",
        {**w, "runtime_id": registered["runtimeId"]},
        params={"limit": 3},
    )
    s.call("GET", "/workspaces/{workspace_id}/fleet", w, params={"include": "archived"})
    s.call("GET", "/workspaces/{workspace_id}/audit", w, params={"limit": 3})
    return s.exchanges


def test_real_answers_match_their_documented_schemas(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, alerting), receiver() as hook:
        exchanges = run_scenario(client, alerting, clock, hook.url)
        document = openapi(client)
    documented = {
        (method, path)
        for method, path in api_operations(client)
        if any(json_responses(document["paths"][path][method.lower()]))
    }
    reached = set()
    for exchange in exchanges:
        if exchange.body is None:
            continue
        operation = document["paths"][exchange.route][exchange.method.lower()]
        schema = dict(json_responses(operation))[str(exchange.status)]
        validator = jsonschema_rs.validator_for(
            {**schema, "components": document["components"]}, validate_formats=True
        )
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(exchange.body)]
        assert errors == [], (exchange.method, exchange.route, errors)
        reached.add((exchange.method, exchange.route))
    # Every JSON route is checked against a real answer: a new route joins the scenario.
    assert documented - reached == set()
