"""The client's error tree and the protocol edges, against scripted answers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fleetplane.client import (
    APIError,
    AsyncClient,
    AuthError,
    BadRequestError,
    Client,
    ClientError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
    iso_timestamp,
    merge_local_policy,
    workspace_updated_event,
)
from fleetplane.client.errors import error_from_response, parse_retry_after

ENDPOINT = "https://fleet.example"


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (422, ValidationError),
        (429, RateLimitedError),
        (500, ServerError),
        (503, ServerError),
        (418, APIError),
    ],
)
def test_status_picks_the_class_and_the_envelope_fills_it(
    status: int, kind: type[APIError]
) -> None:
    response = httpx.Response(status, json=envelope("the_code", "A sentence.", {"field": "x"}))
    error = error_from_response(response)
    assert type(error) is kind
    assert isinstance(error, ClientError)
    assert (error.status_code, error.code, error.message, error.details) == (
        status,
        "the_code",
        "A sentence.",
        {"field": "x"},
    )
    assert str(error) == f"{status} the_code: A sentence."
    assert error.retry_after is None


def test_a_body_without_the_envelope_still_makes_an_error() -> None:
    html = httpx.Response(502, text="<html>bad gateway</html>", headers={"Retry-After": "12"})
    error = error_from_response(html)
    assert type(error) is ServerError
    assert (error.code, error.message, error.retry_after) == ("http_502", "Bad Gateway", 12.0)
    assert error.details == {"body": "<html>bad gateway</html>"}
    empty = error_from_response(httpx.Response(429))
    assert (empty.code, empty.details, empty.retry_after) == ("http_429", None, None)
    odd = error_from_response(httpx.Response(400, json={"error": "flat string"}))
    assert (odd.code, odd.message) == ("http_400", "Bad Request")


def test_retry_after_forms() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("2026-03-01T12:00:45", now=now) is None
    for nonsense in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(nonsense) is None


def scripted(handler: Any) -> Client:
    return Client(ENDPOINT, token="fp_rt_x", transport=httpx.MockTransport(handler))


def test_malformed_success_answers_are_unexpected_responses() -> None:
    answers = iter(
        [
            httpx.Response(200, text="not json"),
            httpx.Response(200, json=["a", "list"]),
            httpx.Response(200, json={"status": "ok", "next_heartbeat_ms": True}),
            httpx.Response(304),
            httpx.Response(200, json={"id": "w"}),
        ]
    )
    with scripted(lambda _request: next(answers)) as runtime:
        with pytest.raises(UnexpectedResponseError, match="without a JSON body"):
            runtime.heartbeat("s")
        with pytest.raises(UnexpectedResponseError, match="not an object"):
            runtime.heartbeat("s")
        with pytest.raises(UnexpectedResponseError) as shape:
            runtime.heartbeat("s")
        assert shape.value.details == {"field": "server_time"}
        with pytest.raises(UnexpectedResponseError) as not_modified:
            runtime.pull_config()
        assert not_modified.value.code == "unexpected_not_modified"
        with pytest.raises(UnexpectedResponseError, match="no 'config'"):
            runtime.pull_config()


def test_transport_failures_become_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with scripted(refuse) as runtime, pytest.raises(TransportError) as raised:
        runtime.pull_policies()
    assert raised.value.code == "ConnectTimeout"
    assert "GET https://fleet.example/api/v1/policies" in raised.value.message

    async def attempt() -> None:
        async with AsyncClient(ENDPOINT, transport=httpx.MockTransport(refuse)) as runtime:
            await runtime.send_events([])

    with pytest.raises(TransportError):
        asyncio.run(attempt())


def config_body(revision: int) -> dict[str, Any]:
    return {
        "id": "w",
        "control_plane": {"project_id": "w"},
        "config": {"revision": revision},
        "config_hash": f"{revision:064d}",
        "config_revision": revision,
    }


def test_etag_cache_follows_the_server() -> None:
    requests: list[httpx.Request] = []
    answers = iter(
        [
            httpx.Response(200, json=config_body(1), headers={"ETag": '"one"'}),
            httpx.Response(304, headers={"ETag": '"one"'}),
            httpx.Response(200, json=config_body(2)),
            httpx.Response(200, json=config_body(3), headers={"ETag": '"three"'}),
            httpx.Response(304),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)

    with Client(
        ENDPOINT, token="fp_ws_k", workspace_id="w", transport=httpx.MockTransport(handler)
    ) as runtime:
        pulls = [runtime.pull_config() for _ in range(5)]
    assert [pull.config_revision for pull in pulls] == [1, 1, 2, 3, 3]
    assert [pull.not_modified for pull in pulls] == [False, True, False, False, True]
    assert [pull.etag for pull in pulls] == ['"one"', '"one"', None, '"three"', '"three"']
    # An answer without an ETag drops the cache, so the next pull asks unconditionally.
    assert [request.headers.get("if-none-match") for request in requests] == [
        None,
        '"one"',
        '"one"',
        None,
        '"three"',
    ]
    assert all(request.url.params["workspace_id"] == "w" for request in requests)
    assert all(request.headers["authorization"] == "Bearer fp_ws_k" for request in requests)


def test_requests_carry_only_what_is_known() -> None:
    bodies: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((request.url.path, json.loads(request.content)))
        if request.url.path.endswith("/enroll"):
            assert "authorization" not in request.headers
        return httpx.Response(200, json={"ok": True, "accepted": 1})

    moment = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    with Client(ENDPOINT, transport=httpx.MockTransport(handler), clock=lambda: moment) as runtime:
        assert runtime.register_session("s-1", lane="ops", capabilities=["x"])
        runtime.report_apply_failed("f" * 64, "boom")
        assert runtime.deregister_session("other-session")
        assert runtime.session_id == "s-1"
        with pytest.raises(UnexpectedResponseError):
            runtime.enroll("fp_enr_x", "a1")
    assert bodies[0] == (
        "/api/v1/sessions/register",
        {"session_id": "s-1", "lane": "ops", "capabilities": ["x"]},
    )
    assert bodies[1] == (
        "/api/v1/events",
        {
            "events": [
                {
                    "schema_version": 1,
                    "kind": "config_apply_failed",
                    "timestamp": "2026-05-04T03:02:01.123Z",
                    "config_hash": "f" * 64,
                    "message": "boom",
                    "session_id": "s-1",
                }
            ]
        },
    )
    assert bodies[3] == ("/api/v1/enroll", {"enrollment_token": "fp_enr_x", "agent_id": "a1"})


def test_endpoint_must_be_http_and_authenticate_needs_a_workspace() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("fleet.example")
    with Client("http://fleet.example/") as runtime:
        assert runtime.base_url == "http://fleet.example"
        assert repr(runtime) == ("Client('http://fleet.example', workspace_id=None, agent_id=None)")
        with pytest.raises(ValueError, match="workspace_id and org_id"):
            runtime.authenticate("a")


def test_shared_http_client_is_not_closed_by_the_runtime_client() -> None:
    shared = httpx.Client(transport=httpx.MockTransport(lambda _r: httpx.Response(200)))
    with Client(ENDPOINT, http_client=shared):
        pass
    assert not shared.is_closed
    shared.close()

    async def shared_async() -> bool:
        pool = httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200)))
        async with AsyncClient(ENDPOINT, http_client=pool):
            pass
        closed = pool.is_closed
        await pool.aclose()
        return closed

    assert asyncio.run(shared_async()) is False


def test_async_client_exchanges_the_key_and_sends_telemetry_and_evidence() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers["authorization"], body))
        if request.url.path.endswith("/authenticate"):
            return httpx.Response(
                200,
                json={"workspace_id": "w", "org_id": "o", "agent_id": "a", "token": "fp_rt_new"},
            )
        return httpx.Response(200, json={"accepted": 2})

    async def scenario() -> tuple[str, int, int]:
        async with AsyncClient(
            ENDPOINT,
            token="fp_ws_key",
            workspace_id="w",
            org_id="o",
            transport=httpx.MockTransport(server),
        ) as runtime:
            issued = await runtime.authenticate("a")
            telemetry = await runtime.send_telemetry([{"metric": "m", "value": 1}] * 2)
            evidence = await runtime.send_evidence(["e1", "e2"])
            return issued.token, telemetry, evidence

    assert asyncio.run(scenario()) == ("fp_rt_new", 2, 2)
    assert seen == [
        (
            "/api/v1/authenticate",
            "Bearer fp_ws_key",
            {"workspace_id": "w", "org_id": "o", "agent_id": "a"},
        ),
        (
            "/api/v1/telemetry",
            "Bearer fp_rt_new",
            {"workspace_id": "w", "records": [{"metric": "m", "value": 1}] * 2},
        ),
        (
            "/api/v1/evidence",
            "Bearer fp_rt_new",
            {"workspace_id": "w", "evidence_refs": ["e1", "e2"]},
        ),
    ]


def test_event_builders() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 6000)  # noqa: DTZ001 - naive on purpose: read as UTC
    assert iso_timestamp(naive) == "2026-01-02T03:04:05.006Z"
    assert workspace_updated_event("a" * 64, timestamp="T") == {
        "schema_version": 1,
        "kind": "workspace_updated",
        "timestamp": "T",
        "config_hash": "a" * 64,
    }
    dev = merge_local_policy(
        mode="dev-override",
        workspace_id="w",
        remote={"default_decision": "deny", "rules": []},
        local={"default_decision": "allow", "rules": []},
        timestamp="T",
        session_id="s-3",
    )
    assert [(event["kind"], event["session_id"]) for event in dev.events] == [
        ("workspace_warning", "s-3")
    ]
